"""Resident memory per trial of a whole search (store included), brute force or TPE.

    python benchmarks/bench_trial_memory.py bruteforce 11000
    python benchmarks/bench_trial_memory.py tpe 3000

jsc-s by name (5 Linear layers x 72 choices) on `fake` data with 2,000 validation rows; RSS
is read when the 1,000th and the last trial of this worker finish, in a temporary directory.
"""

import argparse
import tempfile
from pathlib import Path

import tomli_w

from bitscout.cli import main
from bitscout.study import run as search

LAYER = {
    "name": ["integer"],
    "data_in_width": [2, 3, 4, 5, 6, 8],
    "weight_width": [2, 3, 4, 5, 6, 8],
    "bias_width": [4, 8],
}
FIRST = 1000


def config(strategy: str, n: int) -> dict:
    return {
        "model": "jsc-s", "dataset": "fake", "max_epochs": 1, "seed": 0,
        "dataset_options": {"num_samples": 10000, "num_features": 16, "num_classes": 5},
        "search": {
            "search_space": {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}},
            "strategy": {
                "name": "optuna" if strategy == "tpe" else "bruteforce",
                "setup": {"n_trials": n, "sampler": "tpe", "seed": 0},
                "metrics": {"accuracy": {"scale": 1.0}, "average_bitwidth": {"scale": -0.01}},
            },
        },
    }  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def measure(strategy: str, n: int, root: Path) -> dict[int, float]:
    marks: dict[int, float] = {}
    hook = search.Counted.hook

    def marking(self: search.Counted, reporter: search.Reporter) -> search.TrialHook:
        inner = hook(self, reporter)

        def on_trial(*args: object) -> None:
            inner(*args)  # type: ignore[arg-type]
            if self.count in (FIRST, n):
                marks[self.count] = rss_mb()

        return on_trial

    search.Counted.hook = marking  # type: ignore[method-assign]
    path = root / f"{strategy}.toml"
    path.write_text(tomli_w.dumps(config(strategy, n)))
    main(["search", str(path), "--out", str(root / "out")])
    return marks


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("strategy", choices=["bruteforce", "tpe"])
    parser.add_argument("trials", type=int)
    args = parser.parse_args()
    if args.trials <= FIRST:
        parser.error(f"trials must be above {FIRST}")
    with tempfile.TemporaryDirectory() as tmp:
        marks = measure(args.strategy, args.trials, Path(tmp))
    grown = marks[args.trials] - marks[FIRST]
    print(
        f"{args.strategy}: RSS {marks[FIRST]:.1f} MB at {FIRST} trials, "
        f"{marks[args.trials]:.1f} MB at {args.trials}: "
        f"{grown * 1024 / (args.trials - FIRST):.1f} KB per trial"
    )


if __name__ == "__main__":
    cli()
