"""`bench_search.py`'s per-trial split of a search and its searches of a user's own model."""

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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
