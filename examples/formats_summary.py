"""The best validation accuracy at each average weight bit width (rounded to whole bits), per
number format, from a
finished `bitscout search examples/digits_formats.toml --out DIR`.

    python examples/formats_summary.py DIR [--plot formats.png]

A candidate counts for a format when every layer uses it; candidates that mix formats form
their own series. Prints a Markdown table and, with --plot, draws accuracy against average bit
width with each series' front (the best accuracy at or below each width).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def series(trials: pd.DataFrame) -> pd.Series:
    names = trials[[c for c in trials if c.endswith("/name")]]
    uniform = names.nunique(axis=1) == 1
    return names.iloc[:, 0].where(uniform, "mixed")


def best_by_width(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[trials["state"] == "complete"].assign(format=series)
    # bins of about one bit: block_fp's shared exponents add a fraction of a bit
    done = done.assign(bits=done["average_bitwidth"].round().astype(int))
    return done.groupby(["format", "bits"])["accuracy"].max().unstack("format")


def plot(trials: pd.DataFrame, path: Path) -> None:
    done = trials[trials["state"] == "complete"].assign(format=series)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, group in done.groupby("format"):
        points = ax.scatter(group["average_bitwidth"], group["accuracy"], s=6, alpha=0.25)
        front = group.sort_values("average_bitwidth")
        ax.step(front["average_bitwidth"], front["accuracy"].cummax(), where="post",
                color=points.get_facecolor()[0][:3], label=name)  # fmt: skip
    ax.set_xlabel("average weight bit width [bits]")
    ax.set_ylabel("validation accuracy [fraction]")
    ax.set_ylim(max(0.0, done["accuracy"].quantile(0.2) - 0.05), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(title="every layer in", fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.95)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    trials = pd.read_csv(args.run_dir / "trials.csv")
    table = best_by_width(trials)
    print("| average weight bits | " + " | ".join(table.columns) + " |")
    print("|---" * (len(table.columns) + 1) + "|")
    for bits, row in table.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.4f}" for v in row]
        print(f"| {bits:g} | " + " | ".join(cells) + " |")
    if args.plot:
        plot(trials, args.plot)


if __name__ == "__main__":
    main()
