"""The Python API: search any float model on any validation data.

    result = bitscout.search(model, (x_val, y_val), space, objective={"accuracy": 2.0,
                             "average_bitwidth": -0.1}, strategy="tpe", trials=100, seed=0)
    result.best.config, result.best.metrics, result.trials, result.quantized_model()

`bitscout search CONFIG` builds the same `Job` from a TOML file; both run `job.run_job`.
"""

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from bitscout._core.toml import read_toml
from bitscout._core.validate import SEED_MAX, suggest
from bitscout.data.containers import MAX_BYTES, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import LossFn
from bitscout.evaluate.metrics import METRICS, Metric, user_metric
from bitscout.objective import Objective, objective_from
from bitscout.quant.space import SearchSpace, parse_space
from bitscout.study.result import Candidate as Candidate
from bitscout.study.result import SearchResult
from bitscout.study.run import Job, run_job
from bitscout.study.settings import SAMPLER_NAMES, StrategySettings, check_n_jobs, parse_starts

STRATEGIES = ("bruteforce", "greedy", *(s for s in SAMPLER_NAMES if s != "bruteforce"))
OURS = ("bruteforce", "greedy")  # our strategies; every other name is an Optuna sampler
DEFAULT_SAMPLER_TRIALS = 100


def register_metric(
    name: str, fn: Callable[[nn.Module, Any], float], *, direction: str = "maximize",
    unit: str = "",
) -> None:  # fmt: skip
    """Make `fn(quantized_model, data) -> float` the metric `name` for every search (Python
    or config): recorded in trials.csv, usable in objectives and constraints."""
    METRICS.register(name)(user_metric(name, fn, direction=direction, unit=unit))


def read_space(space: Mapping[str, Any] | str | Path, model: nn.Module) -> SearchSpace:
    """`[search.search_space]` as a dict, or a TOML file holding it (a whole config, or the
    table alone)."""
    if isinstance(space, str | Path):
        doc = read_toml(space)
        table = doc.get("search", {}).get("search_space", doc) if "search" in doc else doc
        return parse_space(table, model)
    if not isinstance(space, Mapping):
        raise ConfigError("space", "must be a dict or a TOML file's path", type(space).__name__)
    return parse_space(space, model, key="space")


def user_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Metric]:
    """`{"name": fn}`, `{"name": (fn, "minimize")}` or `{"name": {"fn": fn, "direction": ...,
    "unit": ...}}` as metrics of this search."""
    found: dict[str, Metric] = {}
    for name, value in (metrics or {}).items():
        if name in METRICS:
            raise ConfigError(f"metrics.{name}", "is a built-in or registered metric's name")
        if isinstance(value, Mapping):
            options = {k: v for k, v in value.items() if k != "fn"}
            found[name] = user_metric(name, value.get("fn"), **options)
        elif isinstance(value, tuple):
            found[name] = user_metric(name, value[0], direction=value[1])
        else:
            found[name] = user_metric(name, value)
    return found


def strategy_settings(
    strategy: str, objective: Objective, trials: int | None, seed: int, **setup: Any
) -> StrategySettings:
    if strategy not in STRATEGIES:
        rule = f"unknown strategy{suggest(strategy, STRATEGIES)} (known: {', '.join(STRATEGIES)})"
        raise ConfigError("strategy", rule, strategy)
    if trials is not None and (not _is_int(trials) or trials < 1):
        raise ConfigError("trials", "must be an integer >= 1", trials)
    if not _is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise ConfigError("seed", f"must be an integer in 0..{SEED_MAX}", seed)
    ours = strategy in OURS
    name = strategy if ours else "optuna"
    keys = ("order", "warm_start", "chunked")
    starts = {k: v for k in keys if (v := setup.pop(k, None)) is not None}
    return StrategySettings(
        name=name,
        sampler="tpe" if ours else strategy,
        objective=objective,
        n_trials=trials if trials is not None or ours else DEFAULT_SAMPLER_TRIALS,
        seed=seed,
        **setup,
        **parse_starts(starts, name, None),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def search(
    model: nn.Module,
    data: Any,
    space: Mapping[str, Any] | str | Path,
    *,
    objective: Mapping[str, Any] | Sequence[str] | None = None,
    constraints: Sequence[str] = (),
    strategy: str = "tpe",
    trials: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    storage: str | None = None,
    study: str = "bitscout",
    n_jobs: int = 1,
    timeout: float | None = None,
    order: str = "index",
    warm_start: str | None = None,
    chunked: bool | None = None,
    metrics: Mapping[str, Any] | None = None,
    loss_fn: LossFn | None = None,
    device: str | torch.device = "cpu",
    max_data_bytes: int = MAX_BYTES,
    test_data: Any = None,
    quiet: bool = False,
    verbose: bool = False,
) -> SearchResult:
    """Search how to quantize `model` (any float `nn.Module`, never modified) on validation
    `data` ((x, y) arrays or tensors, a Dataset or a DataLoader, used as given) over `space`.
    `test_data` (the same forms) is held out: the winners are evaluated on it once, at the
    end. See README "Your own model and data" for every argument."""
    if not isinstance(model, nn.Module):
        raise ConfigError("model", "must be a torch.nn.Module", type(model).__name__)
    extra = user_metrics(metrics)
    if objective is None:
        objective = {"loss": -1.0} if loss_fn is not None else {"accuracy": 1.0}
    goal = objective_from(objective, constraints, extra)
    settings = strategy_settings(strategy, goal, trials, seed, timeout=timeout,
                                 n_jobs=check_n_jobs(n_jobs, "n_jobs"), order=order,
                                 warm_start=warm_start, chunked=chunked)  # fmt: skip
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    held_out = None
    if test_data is not None:
        held_out = prepare(test_data, dtype=dtype, device=device, max_bytes=max_data_bytes)
    job = Job(
        model=copy.deepcopy(model).eval(),  # the caller's model keeps even its training flag
        data=prepare(data, dtype=dtype, device=device, max_bytes=max_data_bytes),
        space=read_space(space, model),
        settings=settings,
        out=None if out is None else _out_dir(Path(out)),
        storage=storage,
        study_name=study,
        identity={
            "model": f"{type(model).__module__}.{type(model).__qualname__}",
            "dataset": "python",
        },
        metrics=extra,
        loss_fn=loss_fn,
        test_data=held_out,
    )
    verbosity = "quiet" if quiet else "verbose" if verbose else "normal"
    return SearchResult(run_job(job, Console(), verbosity), job)


def _out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ConfigError("out", "names an existing file, not a directory", str(path))
    return path
