"""`bench_search.py`'s per-trial split of a search and its searches of a user's own model.

    python benchmarks/bench_trials.py [--trials 40] [--repeats 3]

run on its own, splits the output phase of the own-model search (the whole
`bitscout.search(..., out=dir)` call less its wall_s: the set-up before the search, the files
and the report after it) into its parts, per repeat, with the load average.
"""

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from bench_support import ROOT, Timed

from bitscout.study import run as run_module

# --- a search split trial by trial ----------------------------------------------------------


class Spans(Timed):
    """Timed, keeping when each call ended and how long it took."""

    def __init__(self, targets: Sequence[tuple[type, str]]) -> None:
        super().__init__(targets)
        self.spans: list[tuple[float, float]] = []

    def _wrap(self, original: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                end = time.perf_counter()
                self.seconds += end - start
                self.spans.append((end, end - start))

        return timed

    def within(self, start: float, end: float) -> float:
        return sum(took for when, took in self.spans if start < when <= end)


class TrialEnds:
    """When each trial of a search ended: the search's per-trial hook, timed (a trial's cycle
    is from one trial's end to the next: the store's writes, the sampler, the evaluation)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def __enter__(self) -> "TrialEnds":
        self._hook = run_module.Counted.hook
        ends = self.ends

        def hook(counted, reporter):
            inner = self._hook(counted, reporter)

            def on_trial(*args, **kwargs):
                inner(*args, **kwargs)
                ends.append(time.perf_counter())

            return on_trial

        run_module.Counted.hook = hook
        return self

    def __exit__(self, *exc: object) -> None:
        run_module.Counted.hook = self._hook

    def rest_ms(self, *parts: Spans) -> list[float]:
        """Per trial after the first: its cycle less the time in `parts`, ms."""
        pairs = zip(self.ends, self.ends[1:], strict=False)
        return [1000 * (b - a - sum(p.within(a, b) for p in parts)) for a, b in pairs]


# --- a user's own model: examples/own_model -------------------------------------------------

OWN = ROOT / "examples" / "own_model"


def own_model(epochs: int) -> tuple:
    """examples/own_model's residual MLP trained on its digits split; (model, data)."""
    import bitscout

    sys.path.insert(0, str(OWN))
    from net import build, load

    torch.manual_seed(0)
    data = load(seed=0)
    options = bitscout.TrainOptions(epochs=epochs, batch_size=64, learning_rate=3e-3, seed=0)
    return bitscout.train(build(width=32, blocks=2), data["train"], options), data


def own_search(model, data, trials: int, seed: int, out: Path | None, strategy: str) -> dict:
    """examples/own_model/search_own.py's search: the whole call's seconds and wall_s."""
    import bitscout

    start = time.perf_counter()
    result = bitscout.search(
        model, data["val"], OWN / "own_model.toml",
        objective={"accuracy": 1.0, "average_bitwidth": -0.01},
        strategy=strategy, trials=trials, seed=seed, out=out,
    )  # fmt: skip
    return {"call": time.perf_counter() - start, "wall": result.summary["wall_s"]}


# --- the output phase, split ----------------------------------------------------------------


def phase_parts() -> dict[str, list[tuple[Any, str]]]:
    from bitscout.results import display, plots, report, report_md, trials

    return {
        "evaluator set-up": [(run_module, "make_evaluator")],
        "store opening": [(run_module, "open_job_store")],
        "trials.csv": [(trials.TrialsCsv, "rewrite"), (trials.TrialsCsv, "finish")],
        "console result": [(display, "show_result")],
        "run directory read back": [(report, "load_run")],
        "importances": [(report_md, "param_importances")],
        **{f"{name}.png": [(plots, f"{name}_png")] for name in
           ("metrics", "best_so_far", "pareto", "tradeoff", "importances", "heatmap")},
        "report (all of the above from the read back on)": [(report_md, "write_report")],
    }  # fmt: skip


def phase_main() -> None:
    import argparse
    import os
    import tempfile
    import threading

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, data = own_model(epochs=5)
    strategy = "tpe" if args.trials <= 100 else "random"
    with tempfile.TemporaryDirectory() as tmp:
        own_search(model, data, 4, 99, Path(tmp) / "warm", "tpe")  # imports, first calls
        for thread in threading.enumerate():  # the report's modules, imported meanwhile
            if thread.name == "prefetch":
                thread.join()
        found: dict[str, list[float]] = {"whole call less wall_s": []}
        for i in range(args.repeats):
            timers = {name: Timed(targets) for name, targets in phase_parts().items()}
            for timer in timers.values():
                timer.__enter__()
            try:
                r = own_search(model, data, args.trials, i, Path(tmp) / f"r{i}", strategy)
            finally:
                for timer in reversed(timers.values()):
                    timer.__exit__()
            found["whole call less wall_s"].append(r["call"] - r["wall"])
            for name, timer in timers.items():
                found.setdefault(name, []).append(timer.seconds)
    print(f"output phase of {args.trials} {strategy} trials, seconds per repeat "
          f"(load average {os.getloadavg()[0]:.2f} at the end)")  # fmt: skip
    for name, values in found.items():
        print(f"  {name:<50} " + " ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    phase_main()
