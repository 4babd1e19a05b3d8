"""What the multi-fidelity ladder spends to find the full-training search's best.

    python benchmarks/bench_fidelity.py [--seeds 0,1,2,3,4] [--epochs 9] [--tpe-trials 60]

The float MLP of `examples/digits_mlp.toml` (trained here as the config says) and a space of
216 candidates: each of its three Linear layers picks its input width in 2, 3, 4 and its
weight width in 2, 4 (half of each fractional; biases 8 bits, 6 fractional), narrow enough
that candidates differ after training (validation accuracy about 0.4 to 0.92). Every candidate
is trained `--epochs` epochs from the float weights (`train=`, 1,077 training rows, batches of
64) and scored on the 360 validation rows; the objective is validation accuracy. Per seed
(the search's seed seeds each candidate's training):

- full: the brute force, every candidate trained fully (the reference: its best is the
  optimum of the space under that seed);
- ladder: the brute force with `fidelity=True` (post-training rung, then 1, 3, `--epochs`
  epochs, reduction factor 3);
- ladder eta 2: the same with reduction factor 2 (rungs 0, 1, 2, 4, 8, `--epochs`);
- tpe+sh: TPE with `fidelity=True` (successive halving at the same rungs), `--tpe-trials`
  trials.

Printed per search: epochs trained (`summary.json`'s `ladder`), wall time, the best
accuracy with its 95% Wilson interval, whether it lies within the full search's interval,
the share of the full search's epochs, and where the config found ranks in the full search
(1: its optimum; with how many of its candidates lie within the interval, which says how
hard the target is on this space). The target (issue 21): the ladder reaches the full
search's best within its Wilson interval with at most 25% of its epochs, median over seeds.
"""

import argparse
import os
import statistics
import time
from typing import Any

import torch

import bitscout
from bitscout.cli.build import load_data, make_model, train_options
from bitscout.cli.config import load_config
from bitscout.results.stats import wilson_interval
from bitscout.zoo.train import train

CONFIG = "examples/digits_mlp.toml"
LAYER = {"name": ["integer"], "data_in_width": [2, 3, 4], "weight_width": [2, 4],
         "bias_width": [8], "bias_frac_width": [6]}  # fmt: skip
SPACE = {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}}


def prepared() -> dict[str, Any]:
    """The float model (trained as the config says) and its splits."""
    cfg = load_config(CONFIG)
    data = load_data(cfg)
    model = make_model(cfg, data)
    train(model, (data.x_train, data.y_train), train_options(cfg))
    return {"model": model.eval(), "val": (data.x_val, data.y_val),
            "train": (data.x_train, data.y_train)}  # fmt: skip


def one(case: dict[str, Any], seed: int, epochs: int, **how: Any) -> dict[str, Any]:
    """One search's figures: epochs trained, wall seconds, the best's accuracy and interval."""
    start = time.perf_counter()
    result = bitscout.search(case["model"], case["val"], SPACE, objective={"accuracy": 1.0},
                             seed=seed, train={"epochs": epochs}, train_data=case["train"],
                             quiet=True, **how)  # fmt: skip
    wall = time.perf_counter() - start
    assert result.best is not None
    rows = result.summary["eval_samples"]
    accuracy = result.best.metrics["accuracy"]
    ladder = result.summary["ladder"]
    trained = result.trials[~result.trials["cached"].astype(bool)]
    spent = ladder["epochs_trained"] if ladder else int(trained["epochs"].sum())
    complete = result.trials[result.trials["state"] == "complete"]
    dims = [c for c in result.trials.columns if "/" in c]
    by_config = {tuple(int(r[d]) for d in dims): float(r["accuracy"])
                 for _, r in complete.iterrows()}  # fmt: skip
    best = tuple(int(result.best.config[d]) for d in dims)
    return {"epochs": spent, "wall": wall, "accuracy": accuracy, "trials": len(result.trials),
            "interval": wilson_interval(round(accuracy * rows), rows), "config": best,
            "all": by_config}  # fmt: skip


def rank(full: dict[str, Any], row: dict[str, Any]) -> tuple[int, int]:
    """Where `row`'s best stands in the full search (1: its optimum), and how many of the
    full search's candidates lie within its best's interval (how many would pass)."""
    mine = full["all"][row["config"]]
    # training is deterministic per candidate and seed, wherever a ladder stopped it
    assert abs(mine - row["accuracy"]) < 1e-12, (mine, row["accuracy"])
    lo = full["interval"][0]
    return 1 + sum(a > mine for a in full["all"].values()), sum(
        a >= lo for a in full["all"].values()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--tpe-trials", type=int, default=60)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    case = prepared()
    searches: dict[str, dict[str, Any]] = {
        "full": {"strategy": "bruteforce"},
        "ladder": {"strategy": "bruteforce", "fidelity": True},
        "ladder eta 2": {"strategy": "bruteforce", "fidelity": {"reduction_factor": 2}},
        "tpe+sh": {"strategy": "tpe", "fidelity": True, "trials": args.tpe_trials},
    }
    print("| seed | search | trials | epochs trained | share of full | wall s | best accuracy "
          "[95% Wilson] | within full's interval | rank in full (candidates within) |")  # fmt: skip
    print("|---" * 9 + "|")
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in searches}
    for seed in (int(s) for s in args.seeds.split(",")):
        full: dict[str, Any] = {}
        for name, how in searches.items():
            row = one(case, seed, args.epochs, **how)
            full = full or row
            lo, hi = full["interval"]
            row["share"] = row["epochs"] / full["epochs"]
            row["within"] = lo <= row["accuracy"] <= hi
            row["rank"], passing = rank(full, row)
            found[name].append(row)
            print(f"| {seed} | {name} | {row['trials']} | {row['epochs']} | {row['share']:.1%} | "
                  f"{row['wall']:.1f} | {row['accuracy']:.4f} [{row['interval'][0]:.4f}, "
                  f"{row['interval'][1]:.4f}] | {'yes' if row['within'] else 'NO'} | "
                  f"{row['rank']} ({passing}) |")  # fmt: skip
    print("\nmedian over seeds:")
    print("| search | epochs trained | share of full | wall s | best accuracy | within | rank |")
    print("|---" * 7 + "|")
    for name, rows in found.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("epochs", "share", "wall",
                                                                   "accuracy", "rank")}  # fmt: skip
        within = sum(r["within"] for r in rows)
        print(f"| {name} | {med['epochs']:.0f} | {med['share']:.1%} | {med['wall']:.1f} | "
              f"{med['accuracy']:.4f} | {within}/{len(rows)} | {med['rank']:g} |")  # fmt: skip
    print(f"\nload average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
