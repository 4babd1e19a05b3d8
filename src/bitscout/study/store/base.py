"""The study store: every trial of a search in one Optuna storage, and its CSV view."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from bitscout.quant.space import Choice, SearchSpace
from bitscout.study.store import adapter
from bitscout.study.store.liveness import INTERRUPTED, worker_id

COUNT_ATTR = "count"  # how many candidates a chunked brute force's token holds
CONSTRAINTS_KEY = "constraints"  # Optuna's system-attr prefix, as `Trial.set_constraint` uses
# Optuna logs each caught candidate failure with a traceback; bitscout records the reason.
optuna.logging.set_verbosity(optuna.logging.ERROR)


# Attributes a trial already carries: a metric of the same name stays in `metrics` only.
RESERVED_ATTRS = frozenset({
    "metrics", "feasible", "cached", "duration_s", "reason", "failure", "worker", "heartbeat",
    "chunk", "quota", "claim", "retry_of", "rows", "count", "failures", "metric_names",
})  # fmt: skip


@dataclass(frozen=True)
class Result:
    """One evaluated trial as the store keeps it."""

    metrics: dict[str, float]
    values: list[float]
    violations: dict[str, float]
    feasible: bool
    cached: bool
    duration_s: float
    failure: str | None = None  # why the candidate failed (it raised, or a metric is not finite)
    reason: str = ""  # why a complete candidate is infeasible: the constraints it breaks

    def attrs(self) -> dict[str, Any]:
        """The trial's user attributes: every metric also on its own, so optuna-dashboard and
        optuna.visualization can plot it."""
        if self.failure is not None:
            return {"failure": "error", "reason": self.failure, "duration_s": self.duration_s}
        own = {k: v for k, v in self.metrics.items() if k not in RESERVED_ATTRS}
        extra = {"reason": self.reason} if self.reason else {}
        return {
            "metrics": self.metrics,
            **own,
            "feasible": self.feasible,
            "cached": self.cached,
            "duration_s": self.duration_s,
            **extra,
        }


def distributions(
    space: SearchSpace, config: Mapping[str, Choice]
) -> dict[str, CategoricalDistribution]:
    """The distributions of the dimensions `config` sets (a field that its format does not
    take is not a parameter of the trial)."""
    dims = [d for d in space.dimensions if d.name in config]
    return {d.name: CategoricalDistribution(d.choices) for d in dims}


def record(
    study: optuna.Study,
    space: SearchSpace,
    config: Mapping[str, Choice],
    result: Result,
    attrs: Mapping[str, Any] | None = None,
) -> int:
    """Add one finished evaluation as a complete (or failed) trial, in one write, with `attrs`
    besides the result's; return its trial number."""
    failed = result.failure is not None
    trial = optuna.trial.create_trial(
        params=dict(config),
        distributions=distributions(space, config),
        values=None if failed else result.values,
        user_attrs={"worker": worker_id(), **(attrs or {}), **result.attrs()},
        constraints=None if failed else result.violations or None,
        state=TrialState.FAIL if failed else TrialState.COMPLETE,
    )
    return adapter.number_of(study, adapter.add_trial(study, trial))


def start_trial(
    study: optuna.Study, space: SearchSpace, config: Mapping[str, Choice], attrs: Mapping
) -> int:
    """A RUNNING trial for `config`, stamped with this worker; returns its trial id."""
    trial = optuna.trial.create_trial(
        params=dict(config),
        distributions=distributions(space, config),
        user_attrs={"worker": worker_id(), **attrs},
        state=TrialState.RUNNING,
    )
    return adapter.add_trial(study, trial)


def finish_trial(study: optuna.Study, trial_id: int, result: Result) -> None:
    """Complete (or fail) a RUNNING trial with `result`."""
    for key, value in result.attrs().items():
        adapter.set_attr(study, trial_id, key, value)
    if result.failure is not None:
        adapter.set_state(study, trial_id, TrialState.FAIL)
        return
    for name, violation in result.violations.items():
        adapter.set_system_attr(study, trial_id, f"{CONSTRAINTS_KEY}:{name}", violation)
    adapter.set_state(study, trial_id, TrialState.COMPLETE, result.values)


def set_trial_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    adapter.set_attr(study, trial_id, key, value)


def trial_number(study: optuna.Study, trial_id: int) -> int:
    return adapter.number_of(study, trial_id)


def abandon_trial(study: optuna.Study, trial_id: int, state: TrialState, reason: str) -> None:
    """End a RUNNING trial that will not be evaluated here: FAIL (interrupted) or PRUNED."""
    failure = INTERRUPTED if state == TrialState.FAIL else "pruned"
    adapter.set_attr(study, trial_id, "failure", failure)
    adapter.set_attr(study, trial_id, "reason", reason)
    adapter.set_state(study, trial_id, state)


def finish_order(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials in the order they finished (unfinished last, by number): a brute-force worker
    numbers its claim token first but finishes it last."""
    far = datetime.max.replace(tzinfo=UTC)

    def when(t: FrozenTrial) -> tuple[datetime, int]:
        done = t.datetime_complete
        if done is None:
            return far, t.number
        return (done if done.tzinfo else done.astimezone(UTC)), t.number

    return sorted(trials, key=when)


def done_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that carry metrics, in the order they finished."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return finish_order([t for t in complete if "metrics" in t.user_attrs])


def has_ended(trial: FrozenTrial) -> bool:
    """Whether a trial ran to an end: complete with its metrics, or failed by its own
    evaluation. An interrupted trial has not, even when its metrics were written before the
    interruption (it is evaluated again)."""
    if trial.state == TrialState.COMPLETE:
        return "metrics" in trial.user_attrs
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure") == "error"


def ended_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ran to an end (see `has_ended`): what n_trials counts."""
    states = (TrialState.COMPLETE, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=states) if has_ended(t)]


def candidates(trials: Sequence[FrozenTrial]) -> int:
    """How many candidates `trials` evaluated: a chunked brute force's token stands for its
    whole chunk."""
    return sum(int(t.user_attrs.get(COUNT_ATTR, 1)) for t in trials)


def ended_count(study: optuna.Study) -> int:
    """Candidates evaluated to an end (what n_trials counts)."""
    return candidates(ended_trials(study))


def trial_state(trial: FrozenTrial) -> str:
    """complete, infeasible, failed, running, waiting or pruned (lost a claim to a worker)."""
    if trial.state != TrialState.COMPLETE:
        return "failed" if trial.state == TrialState.FAIL else trial.state.name.lower()
    return "complete" if trial.user_attrs.get("feasible", True) else "infeasible"
