"""Where a QAT candidate's wall time goes: training steps against bookkeeping and evaluation.

    python benchmarks/bench_qat.py [--trials 60] [--epochs 1,3,10] [--repeats 3]

A TPE search (seed 0) over the 13,824 candidates of `examples/digits_mlp.toml` (`make run`'s
space; its float MLP trained here), each candidate trained `--epochs` epochs from the float
weights (`bitscout.search(..., train=..., train_data=...)`, 1,077 training rows, batches of 64)
and scored on the 360 validation rows. The baseline, measured in the same run: the same
search without training (post-training quantization). Timers wrap, for the search's duration:

- training: `Trainer.train` (the forward, backward and optimizer steps of every epoch);
- build: `quantize_model` in the evaluator (the candidate copied from the float weights);
- scoring: `Evaluator._scored` (the trained candidate's metrics on validation data);
- sampler: TPE's `infer_relative_search_space`, `sample_relative`, `sample_independent`,
  `before_trial`, `after_trial`;
- rest: the search loop's wall (`summary.json`'s `wall_s`) minus those (the store, trial
  bookkeeping, the objective, the progress reporter).

Per candidate is the search loop's wall over the trials; set-up (the evaluator's construction,
the float baseline, the fast path's cross-check) is printed apart. The target (issue 21): the
non-training share, bookkeeping and evaluation, at most 10% of a candidate's wall time.
"""

import argparse
import os
import statistics
import time
import tomllib
from pathlib import Path
from typing import Any

import optuna
import torch
from bench_support import Timed

import bitscout
from bitscout.cli.build import load_data, make_model, train_options
from bitscout.cli.config import load_config
from bitscout.evaluate import evaluator as evaluate
from bitscout.evaluate.qat import Trainer
from bitscout.zoo.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "digits_mlp.toml"
OBJECTIVE = {"accuracy": 1.0, "average_bitwidth": -0.01}  # digits_mlp.toml's
SAMPLER = [(optuna.samplers.TPESampler, m) for m in ("infer_relative_search_space",
           "sample_relative", "sample_independent", "before_trial", "after_trial")]  # fmt: skip
PARTS = ("training", "build", "scoring", "sampler", "rest")


def prepared() -> dict[str, Any]:
    """The float model (trained as the config says), its data and search space."""
    cfg = load_config(CONFIG)
    data = load_data(cfg)
    model = make_model(cfg, data)
    train(model, (data.x_train, data.y_train), train_options(cfg))
    space = tomllib.loads(CONFIG.read_text())["search"]["search_space"]
    return {"model": model.eval(), "val": (data.x_val, data.y_val),
            "train": (data.x_train, data.y_train), "space": space}  # fmt: skip


def one_search(case: dict[str, Any], trials: int, epochs: int | None) -> dict[str, float]:
    """Seconds per candidate of each part, the set-up's seconds, and the trials run."""
    timers = {
        "training": Timed([(Trainer, "train")]),
        "build": Timed([(evaluate, "quantize_model")]),  # type: ignore[list-item]
        "scoring": Timed([(evaluate.Evaluator, "_scored")]),
        "sampler": Timed(SAMPLER),
    }
    qat = {"train": {"epochs": epochs}, "train_data": case["train"]} if epochs else {}
    start = time.perf_counter()
    with timers["training"], timers["build"], timers["scoring"], timers["sampler"]:
        result = bitscout.search(case["model"], case["val"], case["space"], objective=OBJECTIVE,
                                 strategy="tpe", trials=trials, seed=0, **qat)  # fmt: skip
    total = time.perf_counter() - start
    loop, n = result.summary["wall_s"], result.summary["trials_run"]
    row = {name: t.seconds / n for name, t in timers.items()}
    row["rest"] = loop / n - sum(row.values())
    trained = int((~result.trials["cached"].astype(bool)).sum())
    return {**row, "candidate": loop / n, "setup": total - loop, "trials": n, "trained": trained}


def spread(values: list[float], scale: float = 1e3) -> str:
    """`median (min-max)` of `values` times `scale` (ms by default)."""
    v = [x * scale for x in values]
    return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"


def table(runs: dict[str, list[dict[str, float]]]) -> None:
    base = statistics.median(r["candidate"] for r in runs["PTQ (baseline)"])
    print("| search | ms per candidate | ratio to PTQ | " + " | ".join(f"{p} ms" for p in PARTS)
          + " | not training | set-up s | trials (evaluated) |")  # fmt: skip
    print("|---" * (len(PARTS) + 6) + "|")
    for name, reps in runs.items():
        share = [1 - r["training"] / r["candidate"] for r in reps]
        cells = [spread([r["candidate"] for r in reps]),
                 f"{statistics.median(r['candidate'] for r in reps) / base:.1f}",
                 *(spread([r[p] for r in reps]) for p in PARTS),
                 spread(share, 100).replace(" (", "% ("),
                 spread([r["setup"] for r in reps], 1),
                 f"{reps[0]['trials']} ({reps[0]['trained']})"]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--epochs", default="1,3,10", help="comma-separated epochs per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    case = prepared()
    searches: dict[str, int | None] = {"PTQ (baseline)": None}
    searches |= {f"QAT, {e} epoch(s)": int(e) for e in args.epochs.split(",")}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in searches}
    for _ in range(args.repeats):  # interleaved, so a load change hits every search alike
        for name, epochs in searches.items():
            runs[name].append(one_search(case, args.trials, epochs))
    print(f"\n{args.trials} TPE trials per search, {args.repeats} repeats: median (min-max); "
          f"'not training' is 1 - training / candidate")  # fmt: skip
    table(runs)
    print(f"\nload average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
