"""The Python API: search any float model on any validation data.

    result = bitscout.search(model, (x_val, y_val), space, objective={"accuracy": 2.0,
                             "average_bitwidth": -0.1}, strategy="tpe", trials=100, seed=0)
    result.best.config, result.best.metrics, result.trials, result.quantized_model()

`bitscout search CONFIG` builds the same `Job` from a TOML file, its parameters checked by the
same rules (`bitscout.study.spec`); both run `run_search`. The library prints nothing unless
asked (`show=True`, or the "bitscout" logger at INFO).
"""

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from torch import nn

from bitscout._core.files import output_dir
from bitscout.data.containers import MAX_BYTES, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.audit import AUDIT_RATE
from bitscout.evaluate.evaluator import LossFn
from bitscout.evaluate.forward import floating_dtype
from bitscout.evaluate.metrics import METRICS, Metric, user_metric
from bitscout.objective import objective_from
from bitscout.quant.apply import copy_model
from bitscout.results.console import LOGGER, Verbosity, log_console
from bitscout.study.finetune import FinetuneResult as FinetuneResult
from bitscout.study.finetune import finetune as finetune
from bitscout.study.inputs import read_space as read_space
from bitscout.study.inputs import user_metrics as user_metrics
from bitscout.study.result import Candidate as Candidate
from bitscout.study.result import SearchResult
from bitscout.study.run import Job, run_job
from bitscout.study.settings import StrategySettings, python_settings
from bitscout.study.spec import DEFAULT_SAMPLER, python_values

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


def register_metric(
    name: str, fn: Callable[[nn.Module, Any], float], *, direction: str = "maximize",
    unit: str = "",
) -> None:  # fmt: skip
    """Make `fn(quantized_model, data) -> float` the metric `name` for every search (Python
    or config): recorded in trials.csv, usable in objectives and constraints.

    Args:
        name: the metric's name in objectives, constraints and trials.csv's columns.
        fn: `fn(quantized_model, data) -> float`; `data` is the validation data as given.
        direction: `"maximize"` or `"minimize"`: which way is better.
        unit: shown in the tables' headers (e.g. `"ms"`); empty: none.

    Raises:
        ConfigError: `fn` is not callable or `direction` is neither.
        ValueError: `name` is already a metric (a built-in one or one registered before).
    """
    METRICS.register(name)(user_metric(name, fn, direction=direction, unit=unit))


def search(
    model: nn.Module,
    data: Any,
    space: Mapping[str, Any] | str | Path,
    *,
    objective: Mapping[str, Any] | Sequence[str] | None = None,
    constraints: Sequence[str] = (),
    strategy: "str | BaseSampler" = DEFAULT_SAMPLER,
    trials: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    storage: str | None = None,
    study: str = "bitscout",
    resume: bool | None = None,
    overwrite: bool = False,
    n_jobs: int = 1,
    n_jobs_limit: int | None = None,
    timeout: float | None = None,
    order: str = "index",
    warm_start: str | None = None,
    sensitivity: str | Path | None = None,
    chunked: bool | None = None,
    metrics: Mapping[str, Any] | None = None,
    loss_fn: LossFn | None = None,
    device: str | torch.device = "cpu",
    max_data_bytes: int = MAX_BYTES,
    test_data: Any = None,
    train: Mapping[str, Any] | None = None,
    train_data: Any = None,
    fidelity: bool | Mapping[str, Any] | None = None,
    latency_repeats: int = 5,
    latency_warmup: int = 1,
    latency_budget_s: float = 1.0,
    latency_shared: bool = True,
    audit_rate: float = AUDIT_RATE,
    show: bool = False,
    quiet: bool = False,
    verbose: bool = False,
) -> SearchResult:
    """Search how to quantize `model` on validation `data` over `space`; the same search as
    `bitscout search CONFIG`, whose TOML keys (`[search.strategy.setup]`) these arguments
    mirror: both accept, refuse and default alike (see `bitscout.study.spec`).

    Args:
        model: any float `nn.Module`; never modified (the search works on a copy).
        data: the validation data, used as given: an `(x, y)` pair of tensors or arrays, a
            `Dataset`, or a `DataLoader` that does not shuffle.
        space: the `[search.search_space]` table as a dict, or a TOML file holding it.
        objective: `{metric: scale}` (one maximized weighted sum), a list of metric names (a
            Pareto search, each metric in its own direction) or `{metric: "maximize" |
            "minimize"}`. Default `{"accuracy": 1.0}`; with `loss_fn` and no objective,
            `{"loss": -1.0}` (your loss, minimized), said in the log.
        constraints: strings such as `"accuracy >= 0.9"`.
        strategy: `"bruteforce"`, `"greedy"`, `"ilp"`, `"optuna"` (TPE), or a sampler's name
            (`"tpe"`, `"random"`, `"nsgaii"`, `"nsgaiii"`, `"qmc"`, `"gp"`, `"grid"`), in any
            letter case (default `"tpe"`); or an `optuna.samplers.BaseSampler` instance, used
            as given (seeded as you made it; a resumed study's fingerprint records its class
            name, so another instance of the same class resumes it; with `n_jobs > 1` each
            worker process gets a copy of it in the state it had).
        trials: the study's size at the end. None: the whole space for `bruteforce`, the
            whole walk for `greedy`, the probes plus 100 for `ilp`, 100 for a sampler
            (`n_trials` absent in a config alike);
            a sampler stops sooner once every candidate is evaluated.
        seed: seeds the strategy, `0..2**32-1`.
        out: a directory for trials.csv, best.toml, summary.json, report.md and the study's
            journal; None writes nothing.
        storage: an Optuna storage URL or journal path (default: `out`'s journal, else memory).
        study: the study's name in the store.
        resume: with a store that already holds the study: None continues it when it was
            made by the same search and refuses another search's; True requires trials to
            continue; False refuses any. Said in one log line when a study is continued.
        overwrite: remove `out`'s study and outputs first (not with `storage=`, nor with
            `resume=True`).
        n_jobs: worker processes sharing the study (more than 1 needs `out` or `storage`);
            at most 2 per CPU unless `n_jobs_limit` allows more.
        n_jobs_limit: the cap on `n_jobs` instead of 2 per CPU.
        timeout: seconds (> 0) after which no new trial starts; None: no limit.
        order: the brute force's order: `"index"`, `"reversed"` or `"shuffled"` (seeded).
        warm_start: `"greedy"`: a sampler's first trials are a greedy walk's path; `"ilp"`:
            the ILP's first solutions, after its probes.
        sensitivity: with `"ilp"` (strategy or warm start), a `sensitivity_joint.json` of
            `bitscout.sensitivity(..., joint=True)` or its folder: its probes are not
            evaluated again; refused when it measured another model, data, space or metric
            code. None: `out`'s own, when it holds one of the same measurement.
        chunked: the brute force records one trial per chunk of candidates (None: above
            100,000 candidates).
        metrics: your own metrics, `{"name": fn}`, `{"name": (fn, "minimize")}` or
            `{"name": {"fn": fn, "direction": ..., "unit": ...}}`, `fn(model, data) -> float`.
        loss_fn: `loss_fn(outputs, targets)`, the batch mean, replaces cross-entropy as `loss`
            (its unit is then left blank: it is not nats).
        device: where candidates are evaluated.
        max_data_bytes: data above this is streamed batch by batch instead of held.
        test_data: held-out data (the forms of `data`) the winners are evaluated on once.
        train: quantization-aware training of every candidate (a config's `eval_mode =
            false`): a dict of `epochs` (3), `lr` (1e-3), `optimizer` (`"adam"`, `"adamw"`,
            `"sgd"`), `batch_size` (64), `weight_decay` (0), `lr_scheduler` (`"linear"`,
            `"cosine"`, `"constant"`, `"constant_with_warmup"`), `warmup_steps` (0),
            `accumulation` (1) and `num_samples` (None: every sample of every epoch). Each
            candidate trains from the float weights on `train_data` only, seeded by `seed`,
            and is then scored on `data` as any candidate. None: post-training quantization.
        train_data: the training split (the forms of `data`, held in memory); required
            with `train`.
        fidelity: with `train`, climb a ladder instead of training every candidate fully:
            True, or a dict of `pruner` (`"successive_halving"`, `"hyperband"`),
            `min_epochs` (1), `reduction_factor` (3) and `ptq_rung` (True: the post-training
            score is the first rung). Pruned candidates are recorded with the epochs they
            reached.
        latency_repeats: the `latency` metric's timed runs per candidate, at most (>= 1;
            the median is kept). The same as the config's `setup` key of this name, as are
            the next three.
        latency_warmup: untimed forward passes before the timed ones (>= 0).
        latency_budget_s: seconds (>= 0) after which no further timed run starts (one
            always runs).
        latency_shared: True times each distinct computation once and gives its time to
            every candidate that differs from it in bit widths only (fake quantization runs
            the same operations at every width); False times every candidate.
        audit_rate: the share (0..1) of the candidates scored by the fast engine that are
            scored again by the plain path (the candidate built and run through its own
            forward) and compared, besides the first 2; a difference stops the search
            (SearchFailed). 0 turns the audit off. summary.json's `audit` counts them.
        show: print progress and the result tables on stdout, as the CLI does. By default
            nothing is printed: the same lines go to the `"bitscout"` logger at INFO.
        quiet: only the final result (no progress, no new-best lines).
        verbose: a line per trial.

    Returns:
        A `SearchResult`: `best`, `pareto`, `trials` (trials.csv's rows), `study`, `summary`.

    Raises:
        ConfigError: a bad argument (naming it, the rule and the value), or a store holding
            another search's study.
        SearchFailed: every evaluated candidate failed, the audit found the fast engine's
            figures differ from the plain path's, or the study's database failed.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("model", "must be a torch.nn.Module", type(model).__name__)
    values = {"trials": trials, "seed": seed, "timeout": timeout, "n_jobs": n_jobs,
              "n_jobs_limit": n_jobs_limit, "order": order, "warm_start": warm_start,
              "sensitivity": sensitivity, "chunked": chunked, "latency_repeats": latency_repeats,
              "latency_warmup": latency_warmup, "latency_budget_s": latency_budget_s,
              "latency_shared": latency_shared, "audit_rate": audit_rate, "train": train,
              "fidelity": fidelity}  # fmt: skip
    python_values({"objective": objective, "constraints": constraints, "metrics": metrics,
                   "loss_fn": loss_fn, "max_data_bytes": max_data_bytes})  # fmt: skip
    place = _place(out, storage, study, resume, overwrite)
    extra = user_metrics(metrics)
    goal = objective_from(_default_objective(objective, loss_fn), constraints, extra)
    settings = python_settings(strategy, goal, **values)
    chatter = python_values({"show": show, "quiet": quiet, "verbose": verbose})
    job = _job(model, data, space, settings, place, extra, loss_fn, device, max_data_bytes,
               (test_data, train_data))  # fmt: skip
    if place.overwrite and place.out is not None:
        _remove_outputs(place.out)
    return _run_python(job, **chatter)


@dataclass(frozen=True)
class _Place:
    """Where a Python search keeps its study."""

    out: Path | None
    storage: str | None
    study: str
    resume: bool | None
    overwrite: bool  # the old study's files go once every argument has been checked


def _place(
    out: str | Path | None, storage: str | None, study: str, resume: bool | None,
    overwrite: bool,
) -> _Place:  # fmt: skip
    checked = python_values({"out": out, "storage": storage, "study": study, "resume": resume,
                             "overwrite": overwrite})  # fmt: skip
    path = None if out is None else output_dir(out, "out")
    own = checked["storage"] is None and path is not None  # the study is out='s journal
    if checked["overwrite"] and checked["resume"]:
        raise ConfigError("overwrite", "conflicts with resume=True", True)
    if checked["overwrite"] and not own:
        raise ConfigError("overwrite", "removes out='s own study: needs out= and no storage=", True)
    stored = path is not None and any((path / name).exists() for name in STORES)
    if checked["resume"] and own and not stored:  # refused before a study is made there
        raise ConfigError("resume", "out= holds no study to resume", str(path))
    return _Place(path, checked["storage"], checked["study"], checked["resume"],
                  checked["overwrite"])  # fmt: skip


# What a search writes into `out`: overwrite=True removes these, nothing else.
STORES = ("study.journal", "study.db")
OUTPUTS = (*STORES, "trials.csv", "best.toml", "pareto.csv", "summary.json", "report.md")


def _remove_outputs(out: Path) -> None:
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    if (out / "plots").is_dir():
        shutil.rmtree(out / "plots")


def _default_objective(
    objective: Mapping[str, Any] | Sequence[str] | None, loss_fn: LossFn | None
) -> Mapping[str, Any] | Sequence[str]:
    """Accuracy; with a `loss_fn`, that loss minimized (a regression model has no accuracy),
    which is said, since README's default is accuracy."""
    if objective is not None:
        return objective
    if loss_fn is None:
        return {"accuracy": 1.0}
    logging.getLogger(LOGGER).info("objective: your loss_fn's loss, minimized ({'loss': -1.0})")
    return {"loss": -1.0}


def _job(
    model: nn.Module, data: Any, space: Mapping[str, Any] | str | Path,
    settings: StrategySettings, place: _Place, extra: dict[str, Metric],
    loss_fn: LossFn | None, device: str | torch.device, max_data_bytes: int,
    splits: tuple[Any, Any],
) -> Job:  # fmt: skip
    """`splits`: the test and the training data, each None when not given."""
    dtype = floating_dtype(model)
    held_out, train_data = (
        None if given is None else prepare(given, dtype=dtype, device=device,
                                           max_bytes=max_data_bytes)
        for given in splits
    )  # fmt: skip
    if settings.train is None and train_data is not None:
        raise ConfigError("train_data", "is used by train= only (quantization-aware training)")
    if settings.train is not None and train_data is None:
        raise ConfigError("train_data", "is required with train=: the training split (x, y)")
    return Job(
        model=copy_model(model).eval(),  # the caller's model keeps even its training flag
        data=prepare(data, dtype=dtype, device=device, max_bytes=max_data_bytes),
        space=read_space(space, model),
        settings=settings,
        out=place.out,
        storage=place.storage,
        study_name=place.study,
        identity={
            "model": f"{type(model).__module__}.{type(model).__qualname__}",
            "dataset": "python",
        },
        metrics=extra,
        loss_fn=loss_fn,
        test_data=held_out,
        train_data=train_data,
        resume=place.resume,
    )


def run_search(job: Job, console: Console, verbosity: Verbosity = "normal") -> SearchResult:
    """The one run behind `bitscout.search` and `bitscout search CONFIG`: `job` searched (or
    resumed), its progress and tables on `console`."""
    return SearchResult(run_job(job, console, verbosity), job)


def _run_python(job: Job, show: bool, quiet: bool, verbose: bool) -> SearchResult:
    """`run_search` on stdout with `show`, else into the "bitscout" logger; a store holding
    another search's study is refused in Python's words."""
    console = Console() if show else log_console()
    verbosity: Verbosity = "quiet" if quiet else "verbose" if verbose else "normal"
    try:
        return run_search(job, console, verbosity)
    except ConfigError as err:
        if err.key != "--study" or not err.rule.endswith(CLI_ADVICE):
            raise
        where = "out" if job.out is not None and job.storage is None else "study"
        rule = err.rule.removesuffix(CLI_ADVICE) + (
            "; pass overwrite=True to replace it, or another out= or study= "
            "(resume=True continues the same search only)"
        )
        raise ConfigError(where, rule, err.value) from None


CLI_ADVICE = "; use another --out or --study"
