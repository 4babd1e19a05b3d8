"""The one place that reaches into Optuna's private attributes (`Study._storage`,
`Study._study_id`, `FrozenTrial._trial_id`, `Trial._trial_id`). bitscout adds a finished trial
in one storage write, reads one trial by number and marks other workers' trials, which
Optuna's public API cannot do; if Optuna renames these, only this file changes."""

import importlib
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


def storage(study: optuna.Study) -> BaseStorage:
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    return trial._trial_id


def add_trial(study: optuna.Study, template: FrozenTrial) -> int:
    """Add `template` (any state) in one write; its trial id."""
    return study._storage.create_new_trial(study._study_id, template_trial=template)


def number_of(study: optuna.Study, trial: int) -> int:
    return study._storage.get_trial_number_from_id(trial)


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    storage = study._storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id,
                                                                             number))  # fmt: skip


def set_attr(study: optuna.Study, trial: int, key: str, value: Any) -> None:
    study._storage.set_trial_user_attr(trial, key, value)


def set_system_attr(study: optuna.Study, trial: int, key: str, value: Any) -> None:
    study._storage.set_trial_system_attr(trial, key, value)


def set_state(
    study: optuna.Study, trial: int, state: TrialState, values: Sequence[float] | None = None
) -> bool:
    return study._storage.set_trial_state_values(trial, state, values)


def param_importances(study: optuna.Study) -> dict[str, float]:
    """`optuna.importance.get_param_importances(study)` with its default evaluator, PED-ANOVA,
    without importing the `optuna.importance` package: that package imports scikit-learn's
    forests for fANOVA (1.5 s), more than a whole seed search takes. The submodules it loads
    stay the ones a later `import optuna.importance` uses."""
    if "optuna.importance" not in sys.modules:
        stub = types.ModuleType("optuna.importance")
        stub.__path__ = [str(Path(optuna.__file__).parent / "importance")]
        sys.modules["optuna.importance"] = stub
        try:
            importlib.import_module("optuna.importance._ped_anova")
        finally:
            del sys.modules["optuna.importance"]
    evaluator = sys.modules["optuna.importance._ped_anova"].PedAnovaImportanceEvaluator()
    found = evaluator.evaluate(study)
    total = sum(found.values())
    if total <= 0:
        return {}
    ranked = sorted(found.items(), key=lambda kv: kv[1], reverse=True)
    return {name: float(value) / total for name, value in ranked}
