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
from bitscout.results.schema import objective_from_spec, read_trials
from bitscout.zoo.train import load_checkpoint

if TYPE_CHECKING:
    import pandas as pd  # 0.3 s: read_trials imports it only where trials are read

EVALUATED = ("complete", "infeasible")  # trial states that have metrics


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
        return parse_space(self.summary["space"], self.summary["layers"])

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
        if expected and path.is_file() and file_sha256(path) != expected:
            rule = f"differs from the checkpoint the search used (sha256 {expected[:12]}...)"
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
    """Read `out/summary.json` and `out/trials.csv`; a missing file is a ConfigError."""
    out = Path(out)
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(str(out), f"not a finished search directory ({err})") from err
    dims = summary["dimensions"]
    trials = read_trials(out / "trials.csv", dims)
    user = from_records(summary.get("user_metrics", {}), str(out / "summary.json"))
    objective = objective_from_spec(summary["objective"], user)
    return Run(trials, summary, objective, dims, out, user)
