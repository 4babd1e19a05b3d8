"""The multi-fidelity ladder's one promotion rule, the pruners that apply it to Optuna's
samplers, and what a ladder spent.

A candidate climbs the ladder `Fidelity.rungs(epochs)`: its post-training score (free), then
short trainings, then full training. At each rung below the last it goes on only if its
objective value is among the best `1 / reduction_factor` of the values recorded at that rung
(`promotes`, Optuna's rule: `optuna/pruners/_successive_halving.py`,
`_is_trial_promotable_to_next_rung`). Optuna's samplers meet it through `RungPruner`, a
pruner asked after each rung's `trial.report`; the brute force applies it to the whole
space at once (`strategies/ladder.py`).
"""

import math
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
from optuna.pruners import BasePruner, HyperbandPruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from bitscout.evaluate.qat import Trainer
from bitscout.study.settings import StrategySettings
from bitscout.study.store.base import CACHED, EPOCHS, Store, TrialRecord
from bitscout.study.training import Fidelity


def kept(count: int, eta: int) -> int:
    """How many of `count` values at a rung go on: the best `count // eta`, and at least one
    (Optuna does not pause trials, so of the first `eta - 1` it keeps the best so far)."""
    return max(1, count // eta)


def bar(competing: Sequence[float], eta: int, maximize: bool) -> float:
    """The value to reach to go on from a rung where `competing` were recorded: the
    `kept`-th best of them."""
    ranked = sorted(competing)
    k = kept(len(ranked), eta)
    return ranked[-k] if maximize else ranked[k - 1]


def reaches(value: float, threshold: float, maximize: bool) -> bool:
    return value >= threshold if maximize else value <= threshold


def promotes(value: float, competing: Sequence[float], eta: int, maximize: bool) -> bool:
    """Whether `value` goes on from its rung: it is among the best `kept` of `competing`,
    the values recorded at that rung so far, `value` included (ties at the cut go on)."""
    return reaches(value, bar(competing, eta, maximize), maximize)


class RungPruner(BasePruner):
    """Successive halving at exactly the ladder's rungs, PTQ's rung 0 included (Optuna's own
    SuccessiveHalvingPruner places rungs at `min_resource * eta**k` and cannot treat the
    free post-training score as one). Asked after each `trial.report(value, step=epochs)`;
    the values at a rung are those every trial of the study reported at that step."""

    def __init__(self, rungs: Sequence[int], reduction_factor: int) -> None:
        self.rungs = frozenset(rungs[:-1])  # the last rung is full training: nothing to prune
        self.eta = reduction_factor

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        others = study.get_trials(deepcopy=False)
        competing = [t.intermediate_values[step] for t in others
                     if t.number != trial.number and step in t.intermediate_values]  # fmt: skip
        competing = [v for v in competing if not math.isnan(v)]
        maximize = study.direction == StudyDirection.MAXIMIZE
        return not promotes(value, [*competing, value], self.eta, maximize)


def make_pruner(fidelity: Fidelity, epochs: int) -> BasePruner:
    """The study's pruner for a ladder up to `epochs` (full training)."""
    if fidelity.pruner == "hyperband":
        low = min(fidelity.min_epochs, epochs)
        return HyperbandPruner(min_resource=low, max_resource=epochs,
                               reduction_factor=fidelity.reduction_factor)  # fmt: skip
    return RungPruner(fidelity.rungs(epochs), fidelity.reduction_factor)


def ladder(settings: StrategySettings, trainer: Trainer | None) -> tuple[int, ...] | None:
    """The rungs (in epochs) of a search that climbs a fidelity ladder, else None."""
    if settings.fidelity is None or trainer is None:
        return None
    return settings.fidelity.rungs(trainer.epochs_of())


def ladder_summary(
    store: Store, settings: StrategySettings, trainer: Trainer | None
) -> dict[str, Any] | None:
    """summary.json's `ladder` (see `spent`) for the study in `store`, else None."""
    rungs = ladder(settings, trainer)
    if rungs is None:
        return None
    return spent(store.ended(), rungs, from_scratch=settings.name == "bruteforce")


def spent(
    trials: Iterable[TrialRecord], rungs: Sequence[int], *, from_scratch: bool
) -> dict[str, Any]:
    """What a ladder spent, from the candidates it recorded (complete or pruned, each with
    the epochs it reached): epochs trained in all, what training each of them fully costs,
    and per rung how many candidates reached it. `from_scratch`: each rung trained its
    candidates from the float weights again (the brute force), so a candidate that reached
    rung r also trained every training rung below it."""
    reached = [int(t.user_attrs[EPOCHS]) for t in trials
               if EPOCHS in t.user_attrs and not t.user_attrs.get(CACHED)]  # fmt: skip
    full = rungs[-1]
    training = [r for r in rungs if r > 0]
    if from_scratch:
        trained = sum(sum(r for r in training if r <= e) for e in reached)
    else:
        trained = sum(reached)
    everything = full * len(reached)
    return {
        "rungs": list(rungs),
        "candidates_per_rung": {str(r): sum(e >= r for e in reached) for r in rungs},
        "epochs_trained": trained,
        "epochs_full_training": everything,
        "ratio": trained / everything if everything else None,
    }


def spent_line(summary: dict[str, Any]) -> str:
    """`spent`'s figures in one line for the console."""
    per = ", ".join(f"{n} at {r}" for r, n in summary["candidates_per_rung"].items())
    ratio = summary["ratio"]
    share = "" if ratio is None else f" ({100 * ratio:.0f}%)"
    return (f"fidelity ladder: {summary['epochs_trained']} epochs trained of "
            f"{summary['epochs_full_training']} for training every candidate fully{share}; "
            f"candidates per rung (epochs): {per}")  # fmt: skip
