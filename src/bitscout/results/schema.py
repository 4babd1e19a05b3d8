"""The output files' shared schema: one version for all of them, the objective as summary.json
records it, and trials.csv read back with its values as the search wrote them."""

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitscout._core import files
from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import Metric
from bitscout.objective import MetricSpec, Objective, constraint_text

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = files.SCHEMA_VERSION


def objective_spec(objective: Objective) -> dict[str, Any]:
    """The objective as summary.json records it, so a report can re-read and re-rank."""
    return {
        "single": objective.single,
        "direction": objective.direction,
        "metrics": [
            {"name": m.name, "scale": m.scale, "direction": m.direction} for m in objective.metrics
        ],
        "constraints": [str(c) for c in objective.constraints],
    }


def objective_from_spec(
    spec: dict[str, Any], extra: Mapping[str, Metric] | None = None
) -> Objective:
    """The objective summary.json records; `extra`: the run's own metrics, read back."""
    metrics = tuple(MetricSpec(m["name"], m["scale"], m["direction"]) for m in spec["metrics"])
    constraints = tuple(constraint_text(t, "summary.json", extra) for t in spec["constraints"])
    return Objective(metrics, spec["single"], spec["direction"], constraints)


def choice_value(value: Any) -> Any:
    """A config cell as the space has it: CSV text "4" is the integer 4 (a space's string
    choices, such as "NA" or "half_even", are never numeric)."""
    if hasattr(value, "item"):
        value = value.item()
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None  # a field that the trial's format does not take
    if isinstance(value, str) and value in ("True", "False"):
        return value == "True"
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def read_trials(path: Path, dims: list[str]) -> "pd.DataFrame":
    """trials.csv with empty cells as NaN but "NA" kept as a choice, config values typed."""
    import pandas as pd  # 0.3 s: only where results are read

    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as err:
        raise ConfigError(str(path), f"cannot read trials.csv ({err})", file=True) from err
    for dim in dims:
        if dim in frame and not pd.api.types.is_integer_dtype(frame[dim]):
            # a few distinct values in a million rows: type each one once
            typed = {v: choice_value(v) for v in frame[dim].dropna().unique()}
            frame[dim] = frame[dim].map(typed).astype(object)
    return frame
