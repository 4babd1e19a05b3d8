"""PTQ or QAT? The same configs scored on the validation split after post-training
quantization and after quantization-aware training from the float weights.

    python benchmarks/qat_vs_ptq.py [--configs 200] [--epochs 3] [--lr 1e-3] [--ste all]
                                    [--out /tmp/qat_vs_ptq] [--plot OUT/qat_vs_ptq.png]

README's figure is `--plot docs/qat_vs_ptq.png` with the other options at their defaults.

Two cases, each searched twice by `bitscout.search` with the same strategy, seed and space, once
without and once with `train=` (so both runs score the same configs):

- digits: the digits MLP of `examples/digits_mlp.toml` (`make run`'s config: its float model
  trained here, 30 epochs), its 13,824-candidate space, `--configs` of them in shuffled
  brute-force order (a seeded sample of the whole space);
- jsc-tiny on `fake` data shaped like JSC (16 features, 5 classes, 20,000 rows: 14,000 train,
  4,000 validation), its float model trained as `examples/jsc_tiny.toml` says, over every
  config of seq_blocks_2: data_in_width x weight_width in 2/3/4/8/16, bias_width in 2/4/8/16
  (100 configs; the seed report's 48 are among them).

Per case: a CSV (config, average_bitwidth, ptq_accuracy, qat_accuracy) under `--out`; Kendall's
tau between the two rankings; the best config per average-bit-width bin under each; the smallest
average bit width within 1 point of the float accuracy under each (the bits QAT saves); how
often QAT is at least as good as PTQ at <= 4 average bits; whether a second QAT run gives the
same accuracies; what the fidelity ladder (`fidelity=True`: post-training score, then 1, 3, ...
epochs, successive halving) spends over the same configs, and whether its best accuracy lies
within the 95% Wilson interval of the best of full training. One figure: QAT against PTQ
accuracy per config, both cases.

`--ste` is an ablation of the straight-through gradient, for this run only: `inputs`
(bitscout's: no gradient where a layer's input saturates, the identity for weights and biases),
`identity` (MASE's: the identity everywhere, also where a value saturated) or `all` (no
gradient wherever a value saturates, weights too, as PyTorch's `fake_quantize` does).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.stats import kendalltau
from torch import nn

import bitscout
from bitscout.cli.build import load_data, make_model, train_options
from bitscout.cli.config import Config, load_config
from bitscout.quant import formats
from bitscout.results.stats import wilson_interval
from bitscout.zoo.train import train

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = {"accuracy": 1.0, "average_bitwidth": -0.01}  # digits_mlp.toml's
POINT = 0.01  # "equal accuracy": within one point of the float model's
GOOD = 0.05  # the configs a search would choose among: within 5 points of float under PTQ
TARGETS = (0.0, 0.01, 0.02, 0.05)  # below float accuracy: the bits each needs, PTQ and QAT
JSC_LAYER = {
    "name": ["integer"],
    "data_in_width": [2, 3, 4, 8, 16],
    "data_in_frac_width": ["NA"],
    "weight_width": [2, 3, 4, 8, 16],
    "weight_frac_width": ["NA"],
    "bias_width": [2, 4, 8, 16],
    "bias_frac_width": ["NA"],
}
JSC_SPACE = {
    "name": "graph/quantize/mixed_precision_ptq",
    "setup": {"by": "name"},
    "seed": {"default": {"config": {"name": ["NA"]}}, "seq_blocks_2": {"config": JSC_LAYER}},
}
JSC_DATA = {"num_samples": 20_000, "val_fraction": 0.2, "test_fraction": 0.1}
SHORT = {"data_in_width": "d", "weight_width": "w", "weight_frac_width": "f", "bias_width": "b"}


@dataclass
class Case:
    """One model with its data and space, and how many configs of the space are scored."""

    name: str
    model: nn.Module
    val: tuple[torch.Tensor, torch.Tensor]
    train: tuple[torch.Tensor, torch.Tensor]
    space: dict[str, Any]
    configs: int | None  # None: the whole space, in index order
    batch_size: int


def trained(cfg: Config) -> tuple[nn.Module, Any]:
    """The config's float model trained on its train split, and the splits."""
    data = load_data(cfg)
    model = make_model(cfg, data)
    train(model, (data.x_train, data.y_train), train_options(cfg))
    return model.eval(), data


def digits_case(configs: int) -> Case:
    path = ROOT / "examples" / "digits_mlp.toml"
    cfg = load_config(path)
    model, data = trained(cfg)
    space = tomllib.loads(path.read_text())["search"]["search_space"]
    return Case("digits MLP", model, (data.x_val, data.y_val), (data.x_train, data.y_train),
                space, configs, cfg.batch_size)  # fmt: skip


def jsc_case() -> Case:
    cfg = load_config(ROOT / "examples" / "jsc_tiny.toml")
    cfg = dataclasses.replace(cfg, dataset="fake", dataset_options=JSC_DATA)
    model, data = trained(cfg)
    return Case("jsc-tiny (fake data)", model, (data.x_val, data.y_val),
                (data.x_train, data.y_train), JSC_SPACE, None, cfg.batch_size)  # fmt: skip


def searched(case: Case, train_with: dict | None, **how: Any) -> tuple[pd.DataFrame, dict, float]:
    """The complete trials of one search, its summary.json and its seconds."""
    start = time.perf_counter()
    result = bitscout.search(
        case.model, case.val, case.space, strategy="bruteforce",
        order="index" if case.configs is None else "shuffled", trials=case.configs, seed=0,
        train=train_with, train_data=case.train if train_with else None,
        **{"objective": OBJECTIVE, **how},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return result.trials[result.trials["state"] == "complete"], result.summary, seconds


def label(row: pd.Series, params: list[str]) -> str:
    """`d4w3f4 d8w2f6 ...`: each layer's choices, abbreviated, in layer order."""
    layers: dict[str, str] = {}
    for p in params:
        layer, field = p.split("/")
        layers[layer] = layers.get(layer, "") + f"{SHORT.get(field, field)}{row[p]}"
    return " ".join(layers.values())


def paired(ptq: pd.DataFrame, qat: pd.DataFrame) -> pd.DataFrame:
    """One row per config scored by both searches (they must have scored the same ones)."""
    params = [c for c in ptq.columns if "/" in c]
    both = ptq.merge(qat, on=params, suffixes=("_ptq", "_qat"), validate="one_to_one")
    if not len(both) == len(ptq) == len(qat):
        sys.exit(f"the two searches scored different configs: {len(ptq)}, {len(qat)}, {len(both)}")
    return pd.DataFrame({
        "config": [label(row, params) for _, row in both.iterrows()],
        "params": [json.dumps(row[params].to_dict(), default=int) for _, row in both.iterrows()],
        "average_bitwidth": both["average_bitwidth_ptq"],
        "ptq_accuracy": both["accuracy_ptq"],
        "qat_accuracy": both["accuracy_qat"],
    })  # fmt: skip


def smallest_bits(table: pd.DataFrame, column: str, target: float) -> float:
    """The smallest average bit width whose accuracy reaches `target` (inf: none does)."""
    good = table[table[column] >= target - 1e-12]
    return float(good["average_bitwidth"].min()) if len(good) else math.inf


def bits_needed(table: pd.DataFrame, float_acc: float) -> pd.DataFrame:
    """The smallest average bit width within each of TARGETS of float accuracy, each way."""
    rows = []
    for below in TARGETS:
        target = float_acc - below
        ptq, qat = (smallest_bits(table, c, target) for c in ("ptq_accuracy", "qat_accuracy"))
        rows.append({"accuracy >=": f"float - {below * 100:g} pt ({target:.4f})",
                     "PTQ bits": ptq, "QAT bits": qat, "QAT saves": ptq - qat})  # fmt: skip
    return pd.DataFrame(rows)


def by_bin(table: pd.DataFrame) -> pd.DataFrame:
    """The best config under PTQ and under QAT in each one-bit bin of average bit width."""
    rows = []
    for low, group in table.groupby(table["average_bitwidth"].apply(math.floor)):
        p = group.loc[group["ptq_accuracy"].idxmax()]
        q = group.loc[group["qat_accuracy"].idxmax()]
        rows.append({"bits": f"[{low}, {low + 1})", "n": len(group),
                     "best PTQ config": p["config"], "PTQ acc": p["ptq_accuracy"],
                     "its QAT acc": p["qat_accuracy"], "best QAT config": q["config"],
                     "QAT acc": q["qat_accuracy"], "its PTQ acc": q["ptq_accuracy"]})  # fmt: skip
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
             for row in frame.itertuples(index=False)]  # fmt: skip
    lines = ["| " + " | ".join(frame.columns) + " |", "|---" * len(frame.columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def summary(table: pd.DataFrame, float_acc: float) -> dict[str, Any]:
    """Kendall's tau between the rankings (of all configs, and of those PTQ puts within
    GOOD of float accuracy, where the winners are), and QAT against PTQ at <= 4 average bits."""
    tau = kendalltau(table["ptq_accuracy"], table["qat_accuracy"])
    good = table[table["ptq_accuracy"] >= float_acc - GOOD]
    tau_good = kendalltau(good["ptq_accuracy"], good["qat_accuracy"]).statistic
    low = table[table["average_bitwidth"] <= 4]
    gain = low["qat_accuracy"] - low["ptq_accuracy"]
    accuracies = table[["ptq_accuracy", "qat_accuracy"]].to_numpy()
    return {
        "configs": len(table), "float_accuracy": float_acc, "tau": tau.statistic,
        "tau_p": tau.pvalue, "good_n": len(good), "tau_good": tau_good, "low_n": len(low),
        "low_ge": int((gain >= 0).sum()), "low_worse": int((gain < -POINT).sum()),
        "low_gain": float(gain.median()) if len(low) else math.nan,
        "nan": int(pd.isna(accuracies).sum()),
    }  # fmt: skip


def draw(results: list[tuple[Case, pd.DataFrame, dict]], path: Path) -> None:
    fig = Figure(figsize=(9, 4.2))
    axes = fig.subplots(1, len(results))
    for ax, (case, table, s) in zip(axes, results, strict=True):
        dots = ax.scatter(table["ptq_accuracy"], table["qat_accuracy"], c=table["average_bitwidth"],
                          cmap="viridis", s=12, alpha=0.8)  # fmt: skip
        both = table[["ptq_accuracy", "qat_accuracy"]].to_numpy()
        low, high = both.min() - 0.02, min(1.0, both.max() + 0.02)
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--", label="QAT = PTQ")
        target = s["float_accuracy"] - POINT
        ax.axhline(target, color="tab:red", lw=0.8, label="float - 1 point")
        ax.axvline(target, color="tab:red", lw=0.8)
        ax.set(xlim=(low, high), ylim=(low, high), title=f"{case.name}, {len(table)} configs, "
               f"tau {s['tau']:.2f}", xlabel="PTQ validation accuracy")  # fmt: skip
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        fig.colorbar(dots, ax=ax, label="average weight bit width")
    axes[0].set_ylabel("QAT validation accuracy")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.13, top=0.92, wspace=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def show(case: Case, table: pd.DataFrame, s: dict, seconds: dict[str, Any]) -> None:
    print(f"\n## {case.name}: {s['configs']} configs; float accuracy {s['float_accuracy']:.4f}")
    print(f"search wall: PTQ {seconds['ptq']:.1f} s, QAT {seconds['qat']:.1f} s, QAT again "
          f"{seconds['again']:.1f} s; QAT rerun identical: {seconds['same']}")  # fmt: skip
    print(f"Kendall's tau (PTQ vs QAT accuracy) {s['tau']:.3f} (p = {s['tau_p']:.2g}); "
          f"NaN accuracies: {s['nan']}")  # fmt: skip
    print(f"... among the {s['good_n']} configs PTQ puts within {GOOD * 100:g} points of float: "
          f"{s['tau_good']:.3f}")  # fmt: skip
    print(f"<= 4 average bits: {s['low_n']} configs, QAT >= PTQ in {s['low_ge']}, QAT worse "
          f"by > 1 point in {s['low_worse']}, median gain {s['low_gain']:+.4f}\n")  # fmt: skip
    print(markdown(bits_needed(table, s["float_accuracy"])) + "\n")
    print(markdown(by_bin(table)))


def compared(case: Case, settings: dict, out: Path) -> tuple[pd.DataFrame, dict]:
    """Both searches of `case` (QAT twice, to check determinism), the table and its summary."""
    train_with = {**settings, "batch_size": case.batch_size}
    ptq, ptq_summary, ptq_s = searched(case, None)
    qat, _, qat_s = searched(case, train_with)
    again, _, again_s = searched(case, train_with)
    same = qat["accuracy"].tolist() == again["accuracy"].tolist()
    table = paired(ptq, qat)
    s = summary(table, ptq_summary["float"]["validation"]["accuracy"])
    show(case, table, s, {"ptq": ptq_s, "qat": qat_s, "again": again_s, "same": same})
    csv = out / f"{case.name.split()[0].lower()}.csv"
    table.drop(columns="config").rename(columns={"params": "config"}).to_csv(csv, index=False)
    ladder_cost(case, train_with, table, qat_s)
    return table, s


def ladder_cost(case: Case, train_with: dict, full: pd.DataFrame, full_s: float) -> None:
    """The fidelity ladder (`fidelity=True`) over the same configs, objective accuracy alone:
    the epochs and seconds it spends, and whether its best accuracy lies within the 95%
    Wilson interval of the best accuracy of every config trained fully (`full`)."""
    found, summary, seconds = searched(case, train_with, objective={"accuracy": 1.0},
                                       fidelity=True)  # fmt: skip
    rows = len(case.val[1])
    best = full["qat_accuracy"].max()
    lo, hi = wilson_interval(round(best * rows), rows)
    got = found["accuracy"].max()
    spent = summary["ladder"]
    per = ", ".join(f"{n} at {r}" for r, n in spent["candidates_per_rung"].items())
    print(f"\nfidelity ladder (successive halving, rungs {spent['rungs']} epochs; candidates "
          f"per rung: {per}): {spent['epochs_trained']} epochs of "
          f"{spent['epochs_full_training']} ({100 * spent['ratio']:.0f}%), {seconds:.1f} s "
          f"against {full_s:.1f} s for full training ({100 * seconds / full_s:.0f}%); best "
          f"accuracy {got:.4f} against full training's {best:.4f} [95% Wilson {lo:.4f}, "
          f"{hi:.4f}]: {'within' if lo <= got <= hi else 'outside'}")  # fmt: skip


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=200, help="digits configs (of 13,824)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ste", choices=("inputs", "identity", "all"), default="inputs")
    parser.add_argument("--out", type=Path, default=Path("/tmp/qat_vs_ptq"))
    parser.add_argument("--plot", type=Path, help="the figure (default: OUT/qat_vs_ptq.png)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.plot or args.out / "qat_vs_ptq.png"
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} CPUs, load average {loadavg()}")
    if args.ste == "identity":
        formats._ClippedStraightThrough = formats._StraightThrough  # type: ignore[misc]
    elif args.ste == "all":
        formats._StraightThrough = formats._ClippedStraightThrough  # type: ignore[misc]
    settings = {"epochs": args.epochs, "lr": args.lr}
    results = []
    for make in (lambda: digits_case(args.configs), jsc_case):
        case = make()
        table, s = compared(case, settings, args.out)
        results.append((case, table, s))
    draw(results, plot)
    print(f"\nCSVs in {args.out}, figure {plot} ({plot.stat().st_size // 1024} KB); "
          f"load average at the end {loadavg()}")  # fmt: skip


if __name__ == "__main__":
    main()
