"""The one reader of a run directory: summary.json, trials.csv, the search space, the
objective, each trial's quantization and the float model with the checksum the search
recorded. `bitscout report`, `bitscout export`, `bitscout sensitivity RUN_DIR`,
`bitscout.export` and `SearchResult.load` all read a run through it.

Building a model from a config is the CLI's (its TOML mapping sits above this layer), so the
float model is loaded into an architecture the caller builds: `Run.float_model(build)`."""

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import Metric, from_records
from bitscout.objective import Objective
from bitscout.quant.space import Choice, SearchSpace, parse_space
from bitscout.results.outputs import plan_table, row_config
from bitscout.results.schema import SCHEMA_VERSION, objective_from_spec, read_trials
from bitscout.zoo.train import load_checkpoint

if TYPE_CHECKING:
    import pandas as pd  # 0.3 s: read_trials imports it only where trials are read

EVALUATED = ("complete", "infeasible")  # trial states that have metrics


# What summary.json must hold, and the JSON types of each (None: may be null): a file from
# another version, or edited by hand, is refused in one line naming the key and what is wrong.
NUMBER = (int, float)
SUMMARY_KEYS: dict[str, tuple[type, ...]] = {
    "dimensions": (list,), "objective": (dict,), "eval_samples": (int,),
    "model": (str,), "dataset": (str,), "strategy": (str,), "space_size": (int,),
    "trials_total": (int,), "unique_configs": (int,), "failed": (int,), "wall_s": NUMBER,
    "metric_units": (dict,),
}  # fmt: skip
OPTIONAL_KEYS: dict[str, tuple[type, ...]] = {
    "config": (str, type(None)), "sampler": (str, type(None)), "seed": (int, type(None)),
    "user_metrics": (dict,), "space": (dict,), "layers": (dict,), "float": (dict, type(None)),
    "test": (dict, type(None)), "model_source": (str, dict),
}  # fmt: skip
DIRECTIONS = ("maximize", "minimize")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Run:
    """A finished search as its directory holds it. `path` is None for a run concluded in
    memory (its rows were never read back)."""

    trials: "pd.DataFrame"  # every row of trials.csv
    summary: dict[str, Any]
    objective: Objective
    dimensions: list[str]
    path: Path | None = None
    # the user's metrics the run recorded (direction and unit; their functions are not kept)
    user_metrics: Mapping[str, Metric] = field(default_factory=dict)

    def space(self) -> SearchSpace | None:
        """The search space, rebuilt from summary.json (None for a run made before it kept
        the space)."""
        if "space" not in self.summary or "layers" not in self.summary:
            return None
        try:
            return parse_space(self.summary["space"], self.summary["layers"])
        except ConfigError as err:  # the search checked it: summary.json was edited since
            if self.path is None:
                raise
            key = f"{self.path / 'summary.json'}: space ({err.key})"
            raise ConfigError(key, err.rule, err.value, file=True) from err

    def trial_config(self, number: int, key: str = "trial") -> dict[str, Choice]:
        """Trial `number`'s config (dimension -> choice); it must have been evaluated."""
        rows = self.trials[self.trials["number"] == number]
        if rows.empty or rows.iloc[0]["state"] not in EVALUATED:
            where = self.path or "this run"
            raise ConfigError(key, f"no evaluated trial with that number in {where}", number)
        return row_config(rows.iloc[0].to_dict(), self.dimensions)

    def trial_plan(self, number: int, key: str = "trial") -> dict[str, Any]:
        """Trial `number`'s config as a `[passes.quantize]` table (what best.toml holds)."""
        config = self.trial_config(number, key)
        return plan_table(self.searched_space(), config)

    def searched_space(self) -> SearchSpace:
        """`space()`, or a ConfigError for a run made before runs kept their space."""
        space = self.space()
        if space is None:
            raise ConfigError(str(self.path), "was made before runs kept their space")
        return space

    def checkpoint(self) -> Path | None:
        """The float model's checkpoint: the path summary.json records, else the run's
        model.pt; None when the model was given from Python or used as built. A checkpoint
        whose sha256 differs from the recorded one is refused: it is not the searched model."""
        source = self.summary.get("model_source")
        if source in ("given", "as built") or self.path is None:
            return None
        recorded = Path(source["path"]) if isinstance(source, dict) else None
        path = recorded if recorded is not None and recorded.is_file() else self.path / "model.pt"
        expected = source.get("sha256") if isinstance(source, dict) else None
        if expected and path.is_file() and (found := file_sha256(path)) != expected:
            rule = (f"differs from the checkpoint the search used: its sha256 is {found}, "
                    f"{self.path / 'summary.json'} records {expected}")  # fmt: skip
            raise ConfigError(str(path), rule, file=True)
        return path

    def float_model(self, build: Callable[[], nn.Module]) -> nn.Module:
        """The run's float model, in eval mode: its checkpoint loaded into `build()` (the
        architecture), or `build()` itself for a model used as built. A model given from
        Python was never written: `build()` must return it."""
        model = build()
        path = self.checkpoint()
        return (model if path is None else load_checkpoint(model, path)).eval()


def load_run(out: Path) -> Run:
    """Read `out/summary.json` and `out/trials.csv`; a missing file, a summary.json of
    another schema version or with a key missing or of the wrong type, and text in a metric
    column of trials.csv are each a one-line ConfigError naming the file."""
    out = Path(out)
    where = out / "summary.json"
    try:
        summary = json.loads(where.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(str(out), f"not a finished search directory ({err})") from err
    check_summary(summary, where)
    dims = summary["dimensions"]
    trials = read_trials(out / "trials.csv", dims)
    user = from_records(summary.get("user_metrics", {}), str(where))
    try:
        objective = objective_from_spec(summary["objective"], user)
    except (KeyError, TypeError, AttributeError) as err:  # a hand-edited objective
        raise ConfigError(f"{where}: objective", f"is malformed ({err!r})", file=True) from err
    except ConfigError as err:  # a constraint that does not parse
        key = f"{where}: objective.constraints"
        raise ConfigError(key, err.rule, err.value, file=True) from err
    check_metric_columns(trials, summary, out / "trials.csv")
    return Run(trials, summary, objective, dims, out, user)


def check_summary(summary: Any, where: Path) -> None:
    """summary.json as this version writes it: its schema version, every key the readers use,
    each of its JSON type."""
    if not isinstance(summary, dict):
        raise ConfigError(str(where), "must hold a JSON object", type(summary).__name__, file=True)
    version = summary.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        rule = (f"has schema_version {version!r}; this bitscout reads version {SCHEMA_VERSION} "
                "(run the search again with this version)")  # fmt: skip
        raise ConfigError(str(where), rule, file=True)
    for key, types in (SUMMARY_KEYS | OPTIONAL_KEYS).items():
        if key not in summary:
            if key in SUMMARY_KEYS:
                raise ConfigError(f"{where}: {key}", "is missing", file=True)
            continue
        value = summary[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else JSON_NAMES[t] for t in types)
            raise ConfigError(f"{where}: {key}", f"must be {names}", value, file=True)
    if not all(isinstance(d, str) for d in summary["dimensions"]):
        raise ConfigError(f"{where}: dimensions", "must be a list of strings", file=True)
    _check_objective(summary["objective"], where)
    source = summary.get("model_source")
    if isinstance(source, dict) and not (
        isinstance(source.get("path"), str) and isinstance(source.get("sha256"), str)
    ):
        raise ConfigError(f"{where}: model_source", "needs a path and its sha256", source,
                          file=True)  # fmt: skip


JSON_NAMES = {list: "a list", dict: "an object", int: "an integer", float: "a number",
              str: "a string"}  # fmt: skip


def _check_objective(spec: dict[str, Any], where: Path) -> None:
    key = f"{where}: objective"
    if not isinstance(spec.get("single"), bool) or spec.get("direction") not in DIRECTIONS:
        raise ConfigError(key, "needs single (true/false) and direction (maximize/minimize)",
                          file=True)  # fmt: skip
    metrics, constraints = spec.get("metrics"), spec.get("constraints")
    if not isinstance(metrics, list) or not metrics or not all(
        isinstance(m, dict) and isinstance(m.get("name"), str)
        and isinstance(m.get("scale"), NUMBER) and m.get("direction") in DIRECTIONS
        for m in metrics
    ):  # fmt: skip
        raise ConfigError(f"{key}.metrics", "must list {name, scale, direction} objects",
                          metrics, file=True)  # fmt: skip
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise ConfigError(f"{key}.constraints", "must be a list of strings", constraints,
                          file=True)  # fmt: skip


def check_metric_columns(trials: "pd.DataFrame", summary: dict[str, Any], path: Path) -> None:
    """Every metric column of trials.csv holds numbers (or nothing, for a failed trial)."""
    import pandas as pd

    names = [*summary["metric_units"], *summary.get("user_metrics", {}), "objective"]
    names += [c for c in trials.columns if c.startswith(("scaled_", "objective_"))]
    for name in dict.fromkeys(names):
        if name not in trials or pd.api.types.is_numeric_dtype(trials[name]):
            continue
        column = trials[name]
        numbers = pd.to_numeric(column, errors="coerce")
        nan_text = column.astype(str).str.lower() == "nan"  # a metric that came out NaN
        bad = (column.notna() & numbers.isna() & ~nan_text).to_numpy()
        if not bad.any():
            trials[name] = numbers
            continue
        row = int(bad.argmax())
        rule = f"column {name!r}, row {row + 1} (line {row + 2}) is not a number"
        raise ConfigError(str(path), rule, column.iloc[row], file=True)
