"""Quantization-aware training's settings, each declared once for both doors: MASE's
`[search.strategy.sw_runner.basic_train]` table (with `eval_mode = false`) and
`bitscout.search(train=dict(...))`; and the multi-fidelity ladder's, `[search.strategy.fidelity]`
and `fidelity=dict(...)`. Errors name the key and the rule, as `spec` does."""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bitscout._core.validate import check_keys
from bitscout.errors import ConfigError
from bitscout.evaluate.qat import OPTIMIZERS, SCHEDULERS, Trainer, TrainSettings
from bitscout.study.spec import Param, Refused, boolean, check, choice, integer

if TYPE_CHECKING:
    from bitscout.study.run import Job

RUNNER = "search.strategy.sw_runner.basic_train"
FIDELITY = "search.strategy.fidelity"
PRUNERS = ("successive_halving", "hyperband")
DEFAULT_BATCH = 64


def finite(*, positive: bool) -> Any:
    """A finite number > 0 (`positive`) or >= 0: an infinite learning rate trains nothing."""

    def check_number(value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and math.isfinite(value) and (value > 0 if positive else value >= 0):
            return float(value)
        raise Refused(f"must be a finite number {'>' if positive else '>='} 0")

    return check_number


def samples(value: Any) -> int | None:
    """MASE's `num_samples`: a count >= 1, or -1 for every sample of every epoch."""
    if value == -1 and not isinstance(value, bool):
        return None
    return integer(1)(value)


def mase_name(value: Any) -> Any:
    """MASE's runner `name` (the metric its training batches report): kept for the record
    only, since bitscout scores candidates on validation data after training."""
    if not isinstance(value, str):
        raise Refused("must be a metric's name")
    return value


TRAIN_PARAMS: tuple[Param, ...] = (
    Param("epochs", "max_epochs", integer(1), 3),
    Param("lr", "learning_rate", finite(positive=True), 1e-3),
    Param("optimizer", "optimizer", choice("optimizer", OPTIMIZERS), "adam"),
    Param("weight_decay", "weight_decay", finite(positive=False), 0.0),
    Param("batch_size", "batch_size", integer(1), None),  # None: the config's, else 64
    Param("lr_scheduler", "lr_scheduler", choice("lr_scheduler", SCHEDULERS), "linear"),
    Param("warmup_steps", "num_warmup_steps", integer(0), 0),
    Param("accumulation", "gradient_accumulation_steps", integer(1), 1),
    Param("num_samples", "num_samples", samples, None),
    Param(None, "name", mase_name, None),
    Param(None, "data_loader", choice("data_loader", ("train_dataloader",)), None),
)
# TrainSettings' field of each Python name (the short names are the issue's, the long ones
# TrainSettings' own)
FIELDS = {"epochs": "epochs", "lr": "learning_rate", "optimizer": "optimizer",
          "weight_decay": "weight_decay", "batch_size": "batch_size",
          "lr_scheduler": "lr_scheduler", "warmup_steps": "warmup_steps",
          "accumulation": "accumulation", "num_samples": "num_samples"}  # fmt: skip


@dataclass(frozen=True)
class Fidelity:
    """The ladder a candidate climbs: its post-training score (free, when `ptq_rung`), then
    `min_epochs`, `min_epochs * reduction_factor`, ... epochs, then full training; a pruner
    stops the candidates not among the best `1 / reduction_factor` of a rung."""

    pruner: str = "successive_halving"
    min_epochs: int = 1
    reduction_factor: int = 3
    ptq_rung: bool = True

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """The epochs at which candidates are compared, the last being full training. A rung
        closer to full training than a factor `reduction_factor` is left out (9 epochs
        before 10 would cost almost a full training and tell little)."""
        found = [0] if self.ptq_rung else []
        step = self.min_epochs
        while step * self.reduction_factor <= epochs:
            found.append(step)
            step *= self.reduction_factor
        return (*found, epochs)


FIDELITY_PARAMS: tuple[Param, ...] = (
    Param("pruner", "pruner", choice("pruner", PRUNERS), "successive_halving"),
    Param("min_epochs", "min_epochs", integer(1), 1),
    Param("reduction_factor", "reduction_factor", integer(2), 3),
    Param("ptq_rung", "ptq_rung", boolean, True),
)


def _checked(params: tuple[Param, ...], table: Any, prefix: str, python: bool) -> dict[str, Any]:
    """`table`'s values by Python name (TOML-only keys by their TOML name), each checked; an
    error names the key inside its table (`train.lr`: a bare `lr` would read as an argument
    of `bitscout.search`)."""
    if not isinstance(table, Mapping):
        raise ConfigError(prefix, "must be a table" if not python else "must be a dict", table)
    by: dict[str, Param] = {}
    for p in params:
        name = p.python if python else p.toml
        if name is not None:
            by[name] = p
    check_keys(table, tuple(by), prefix)
    return {(p.python or str(p.toml)): check(p, v, f"{prefix}.{k}")
            for k, v in table.items() for p in (by[k],)}  # fmt: skip


def train_settings(
    table: Any, *, seed: int, batch_size: int | None = None, python: bool = False
) -> TrainSettings:
    """`basic_train` (TOML keys) or `train=` (Python names) as TrainSettings; `batch_size`
    is the config's, used unless the table gives its own."""
    prefix = "train" if python else RUNNER
    values = _checked(TRAIN_PARAMS, table, prefix, python)
    if values.get("batch_size") is None:
        values["batch_size"] = batch_size or DEFAULT_BATCH
    given = {FIELDS[k]: v for k, v in values.items() if k in FIELDS and v is not None}
    return TrainSettings(**given, seed=seed)


def fidelity_settings(table: Any, *, python: bool = False) -> Fidelity:
    """`[search.strategy.fidelity]` or `fidelity=` (True: the defaults) as a Fidelity."""
    if python and table is True:
        return Fidelity()
    prefix = "fidelity" if python else FIDELITY
    return Fidelity(**_checked(FIDELITY_PARAMS, table, prefix, python))


def make_trainer(job: "Job") -> Trainer | None:
    """What trains each candidate when the search is quantization-aware."""
    train = job.settings.train
    if train is None:
        return None
    data = job.train_data
    if data is None:
        raise ConfigError("train_data", "is required to train candidates: pass the training "
                          "split (x, y), held in memory")  # fmt: skip
    if data.x is None or data.y is None:  # a Dataset above max_data_bytes, read batch by batch
        rule = (f"must be held in memory to train on: its {data.rows} rows exceed "
                "max_data_bytes (raise it, or pass fewer rows)")  # fmt: skip
        raise ConfigError("train_data", rule)
    return Trainer(data.x, data.y, train, job.loss_fn)


def resolve_training(job: "Job") -> "Job":
    """Training seeded by the search's seed, fixed before extra workers change theirs."""
    s = job.settings
    if s.train is None:
        return job
    train = dataclasses.replace(s.train, seed=s.seed)
    return dataclasses.replace(job, settings=dataclasses.replace(s, train=train))
