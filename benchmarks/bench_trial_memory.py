"""Resident memory per trial of a whole search (store included), brute force or TPE.

    python benchmarks/bench_trial_memory.py bruteforce 11000
    python benchmarks/bench_trial_memory.py tpe 3000

jsc-s by name (5 Linear layers x 72 choices) on `fake` data with 2,000 validation rows; RSS
is read when the 1,000th and the last trial of this worker finish, in a temporary directory.
`--chunked` keeps one trial per chunk of a brute force (default: one per candidate, as a brute
force over at most 100,000 candidates does).

While the search runs, a background thread imports what its report needs (pandas, matplotlib,
scikit-learn for the parameter importances: about 170 MB of RSS once). The first trial waits
for it, so that the per-trial figure is what trials cost; that import is printed on its own.
"""

import argparse
import tempfile
import threading
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


def config(strategy: str, n: int, chunked: bool = False) -> dict:
    return {
        "model": "jsc-s", "dataset": "fake", "max_epochs": 1, "seed": 0,
        "dataset_options": {"num_samples": 10000, "num_features": 16, "num_classes": 5},
        "search": {
            "search_space": {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}},
            "strategy": {
                "name": "optuna" if strategy == "tpe" else "bruteforce",
                "setup": {"n_trials": n, "sampler": "tpe", "seed": 0, "chunked": chunked},
                "metrics": {"accuracy": {"scale": 1.0}, "average_bitwidth": {"scale": -0.01}},
            },
        },
    }  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def wait_for_prefetch() -> float:
    """RSS the search's background import adds from now on (MB), once it is done."""
    before = rss_mb()
    for thread in threading.enumerate():
        if thread.name == "prefetch":
            thread.join()
    return rss_mb() - before


def measure(strategy: str, n: int, root: Path, chunked: bool = False) -> dict[int, float]:
    marks: dict[int, float] = {}
    hook = search.Counted.hook

    def marking(self: search.Counted, reporter: search.Reporter) -> search.TrialHook:
        inner = hook(self, reporter)

        def on_trial(*args: object) -> None:
            inner(*args)  # type: ignore[arg-type]
            if self.count == 1:
                marks[0] = wait_for_prefetch()
            if self.count in (FIRST, n):
                marks[self.count] = rss_mb()

        return on_trial

    search.Counted.hook = marking  # type: ignore[method-assign]
    path = root / f"{strategy}.toml"
    path.write_text(tomli_w.dumps(config(strategy, n, chunked)))
    main(["search", str(path), "--out", str(root / "out")])
    return marks


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("strategy", choices=["bruteforce", "tpe"])
    parser.add_argument("trials", type=int)
    parser.add_argument("--chunked", action="store_true", help="brute force: a trial a chunk")
    args = parser.parse_args()
    if args.trials <= FIRST:
        parser.error(f"trials must be above {FIRST}")
    with tempfile.TemporaryDirectory() as tmp:
        marks = measure(args.strategy, args.trials, Path(tmp), args.chunked)
    grown = marks[args.trials] - marks[FIRST]
    print(
        f"{args.strategy}: RSS {marks[FIRST]:.1f} MB at {FIRST} trials, "
        f"{marks[args.trials]:.1f} MB at {args.trials}: "
        f"{grown * 1024 / (args.trials - FIRST):.1f} KB per trial; the report's modules, "
        f"imported in the background, {marks[0]:+.0f} MB once"
    )


if __name__ == "__main__":
    cli()
