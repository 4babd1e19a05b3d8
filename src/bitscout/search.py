"""`bitscout search`: validate, get the float model, run the strategy, write the outputs."""

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from bitscout.config import Config
from bitscout.errors import ConfigError, SearchFailed
from bitscout.evaluate.evaluator import Evaluator
from bitscout.outputs import (
    best_entry,
    best_trials,
    ranked,
    write_best_toml,
    write_pareto_csv,
    write_summary,
)  # fmt: skip
from bitscout.progress import Reporter, config_text
from bitscout.quant.space import Choice, SearchSpace, parse_space
from bitscout.report import load_run
from bitscout.report_md import write_report
from bitscout.study.objective import Objective
from bitscout.study.parallel import check_shareable, join, spawn, worker_argv
from bitscout.study.settings import SAMPLER_NAMES, STRATEGY_NAMES, StrategySettings, parse_settings
from bitscout.study.storage import DATA_KEY, mask_password, open_study
from bitscout.study.store import Result, TrialsCsv, done_trials, trial_state
from bitscout.study.strategies import STRATEGIES, SearchContext
from bitscout.study.strategies.base import TrialHook
from bitscout.validate import SEED_MAX, check_keys
from bitscout.workflow import existing_model, load_data, make_model, train_to
from bitscout.zoo.data import Splits

# Cheap metrics reported for every candidate besides the objective's (latency only on request).
REPORTED = (
    "accuracy",
    "loss",
    "model_size",
    "model_size_bits",
    "flops",
    "bops",
    "average_bitwidth",
    "memory_density",
)


@dataclass(frozen=True)
class Overrides:
    """Command-line values, which win over the config's."""

    strategy: str | None = None
    sampler: str | None = None
    trials: int | None = None
    seed: int | None = None


def apply_overrides(settings: StrategySettings, o: Overrides) -> StrategySettings:
    if o.strategy is not None and o.strategy not in STRATEGY_NAMES:
        raise ConfigError(
            "--strategy", f"unknown strategy; known: {', '.join(STRATEGY_NAMES)}", o.strategy
        )
    if o.sampler is not None and o.sampler not in SAMPLER_NAMES:
        raise ConfigError(
            "--sampler", f"unknown sampler; known: {', '.join(SAMPLER_NAMES)}", o.sampler
        )
    if o.trials is not None and o.trials < 1:
        raise ConfigError("--trials", "must be an integer >= 1", o.trials)
    if o.seed is not None and o.seed < 0:
        raise ConfigError("--seed", "must be an integer >= 0", o.seed)
    if o.seed is not None and o.seed > SEED_MAX:
        raise ConfigError(
            "--seed", f"must be an integer <= {SEED_MAX} (samplers take 32-bit seeds)", o.seed
        )
    name = o.strategy or ("optuna" if o.sampler else settings.name)
    changes = {
        "name": name,
        "sampler": o.sampler or settings.sampler,
        "n_trials": o.trials or settings.n_trials,
        "seed": settings.seed if o.seed is None else o.seed,
    }
    return dataclasses.replace(settings, **changes)


def metric_names(settings: StrategySettings) -> list[str]:
    objective = settings.objective
    wanted = [*objective.names, *(c.metric for c in objective.constraints), *REPORTED]
    return list(dict.fromkeys(wanted))


def check_search(cfg: Config, overrides: Overrides) -> StrategySettings:
    if not cfg.search:
        raise ConfigError("search", "table is required for `bitscout search`")
    check_keys(cfg.search, ("search_space", "strategy"), "search")
    return apply_overrides(parse_settings(cfg.search, cfg.seed), overrides)


def _study_meta(
    cfg: Config, settings: StrategySettings, space: SearchSpace, data: Splits, model: nn.Module
) -> dict[str, Any]:
    """What a resumed study must share with this search, or its trials mean something else
    (in the order a difference is reported)."""
    n = settings.num_samples or len(data.y_val)
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        DATA_KEY: {
            "seed": cfg.seed,  # the top-level seed splits the data
            "dataset_path": cfg.dataset_path,
            "dataset_options": dict(cfg.dataset_options),
            "num_samples": settings.num_samples,
            "rows": n,
            "sha256": tensors_digest(data.x_val[:n], data.y_val[:n]),
        },
        "checkpoint_sha256": state_digest(model),
        "dimensions": [[d.name, list(d.choices)] for d in space.dimensions],
        "strategy": settings.name,
        "sampler": settings.sampler if settings.name == "optuna" else None,
        "objective": [[m.name, m.scale, m.direction] for m in settings.objective.metrics],
    }


def make_evaluator(
    settings: StrategySettings, space: SearchSpace, data: Splits, model: nn.Module
) -> Evaluator:
    """The evaluator of one search: the first `num_samples` validation rows (or all)."""
    n = settings.num_samples or len(data.y_val)
    names = ("latency_repeats", "latency_warmup", "latency_budget_s")
    latency = {name: getattr(settings, name) for name in names}
    return Evaluator(
        model,
        space,
        (data.x_val[:n], data.y_val[:n]),
        metric_names(settings),
        latency=latency,
        share_latency=settings.latency_shared,
    )


@dataclass(frozen=True)
class SearchRun:
    out: Path
    storage: str
    study_name: str
    load: str | None = None
    child: bool = False  # an extra worker of a parent's n_jobs: no outputs of its own


@dataclass
class Prepared:
    settings: StrategySettings
    space: SearchSpace
    model: nn.Module
    checkpoint: Path
    study: Any
    data: Splits


def prepare(cfg: Config, run: SearchRun, overrides: Overrides, console: Console) -> Prepared:
    """Validate everything, then get the float model and open the study. Bad input is
    refused before anything is written to `run.out`."""
    settings = check_search(cfg, overrides)
    check_shareable(run.storage, 1 if run.child else settings.n_jobs)
    data = load_data(cfg, console)
    space = parse_space(cfg.search.get("search_space", {}), make_model(cfg, data))
    model = existing_model(cfg, data, run.load, run.out, console)
    if model is None:
        run.out.mkdir(parents=True, exist_ok=True)
        model = train_to(cfg, data, run.out, console)
    strategy = STRATEGIES.get(settings.name, "search.strategy.name")
    meta = _study_meta(cfg, settings, space, data, model)
    sampler = strategy.sampler(settings, space, settings.objective)
    if "://" not in run.storage:
        Path(run.storage).parent.mkdir(parents=True, exist_ok=True)
    study = open_study(
        run.storage, run.study_name, settings.objective, meta, sampler, notify=console.print
    )
    run.out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(run.load) if run.load else run.out / "model.pt"
    return Prepared(settings, space, model, checkpoint, study, data)


def run_search(cfg: Config, run: SearchRun, overrides: Overrides, console: Console) -> dict:
    """Run (or resume) the configured search and write its outputs into `run.out`."""
    p = prepare(cfg, run, overrides, console)
    evaluator = make_evaluator(p.settings, p.space, p.data, p.model)
    before = done_trials(p.study)
    for t in before:  # a resumed search reuses what the store already holds
        evaluator.remember(t.params, t.user_attrs["metrics"])
    ctx = SearchContext(p.space, evaluator, p.settings.objective, p.settings, p.study)
    ctx.notify = lambda message: console.print(message, highlight=False)
    console.print(
        f"searching {p.space.size} candidates with {describe(p.settings)}; "
        f"{len(before)} trials already in the store"
    )
    procs = [] if run.child else spawn(extra_workers(cfg, run, p, overrides), run.storage)
    table = TrialsCsv(
        run.out / "trials.csv", p.study, p.space, p.settings.objective, metric_names(p.settings)
    )
    if not run.child:
        table.rewrite()
    own = Counted(table=None if run.child else table)
    start = time.perf_counter()
    try:
        with Reporter(console, ctx.budget(), p.settings.objective) as reporter:
            ctx.on_trial = own.hook(reporter)
            STRATEGIES.get(p.settings.name, "search.strategy.name").run(ctx)
        join(procs, console)
    except BaseException:
        if not run.child:  # keep what finished; an error writing it must not hide this one
            with contextlib.suppress(OSError):
                write_outputs(cfg, run, p, table, Tally(before, own.count, start), evaluator)
        raise
    if run.child:
        return {}
    summary = write_outputs(cfg, run, p, table, Tally(before, own.count, start), evaluator)
    return finish(console, run, p.settings, p.study, summary)


@dataclass
class Counted:
    """Counts this worker's own trials (others' land in the same study) and appends each to
    trials.csv, when the worker keeps one."""

    table: TrialsCsv | None
    count: int = 0

    def hook(self, reporter: Reporter) -> TrialHook:
        def on_trial(number: int, config: Mapping[str, Choice], result: Result) -> None:
            self.count += 1
            if self.table is not None:
                self.table.append(number)
            reporter(number, config, result)

        return on_trial


@dataclass(frozen=True)
class Tally:
    """What one invocation did: trials the study held before it, the trials this worker ran,
    and when it started."""

    before: list
    own: int
    start: float


def extra_workers(cfg: Config, run: SearchRun, p: Prepared, o: Overrides) -> list[list[str]]:
    """`n_jobs - 1` more processes on the same study; each seeds its sampler differently, or
    they would all propose the same configs."""
    if p.settings.n_jobs == 1:
        return []
    if cfg.source is None:
        raise ConfigError("search.strategy.setup.n_jobs", "> 1 needs a config file", 1)
    flags = [f"--{k}={v}" for k, v in (("strategy", p.settings.name), ("trials", o.trials))]
    flags += [f"--sampler={p.settings.sampler}"] if p.settings.name == "optuna" else []
    return [
        worker_argv(
            cfg.source, run.out, p.checkpoint, run.study_name,
            [*(f for f in flags if not f.endswith("=None")), f"--seed={p.settings.seed + i}"],
        )
        for i in range(1, p.settings.n_jobs)
    ]  # fmt: skip


def finish(
    console: Console, run: SearchRun, settings: StrategySettings, study: Any, summary: dict
) -> dict:
    """Show the winners and write the report; a search where every candidate failed is an
    error that says why."""
    if summary["complete"] == 0 and summary["failed"] > 0:
        raise SearchFailed(
            f"all {summary['failed']} evaluated candidates failed; first reason: "
            f"{first_failure(study)} (details in {run.out / 'trials.csv'})"
        )
    if summary["complete"] == 0:
        console.print("no trial has finished yet (timeout?): nothing to report")
        return summary
    show_best(console, settings, study)
    report = write_report(
        load_run(run.out), settings.objective, run.out, f"bitscout search: {run.out.name}"
    )
    console.print(f"report: {report}")
    return summary


def first_failure(study: Any) -> str:
    reasons = [t.user_attrs.get("reason") for t in study.get_trials(deepcopy=False)]
    return next((r for r in reasons if r), "unknown")


def state_digest(model: nn.Module) -> str:
    """Identifies the float weights, so workers with different checkpoints can't share a
    study."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def tensors_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of tensors' dtypes, shapes and values: the identity of the evaluation data."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def describe(settings: StrategySettings) -> str:
    if settings.name == "optuna":
        return f"optuna/{settings.sampler} (seed {settings.seed})"
    return settings.name


def write_outputs(
    cfg: Config, run: SearchRun, p: Prepared, table: TrialsCsv, tally: Tally, evaluator: Evaluator
) -> dict[str, Any]:
    """trials.csv, best.toml, pareto.csv (multi-objective) and summary.json."""
    settings, space, study = p.settings, p.space, p.study
    objective = settings.objective
    names = metric_names(settings)
    table.rewrite()
    done = done_trials(study)
    winners = best_trials(done, objective)
    if winners:
        write_best_toml(run.out / "best.toml", p.model, space, winners[0])
    if not objective.single:
        write_pareto_csv(run.out / "pareto.csv", winners, space, names)
    states = [trial_state(t) for t in study.get_trials(deepcopy=False)]
    summary = {
        "config": str(cfg.source) if cfg.source else None,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "strategy": settings.name,
        "sampler": settings.sampler if settings.name == "optuna" else None,
        "seed": settings.seed,
        "space_size": space.size,
        "trials_run": tally.own,
        "trials_run_all_workers": len(done) - len(tally.before),
        "trials_total": len(states),
        "complete": states.count("complete") + states.count("infeasible"),
        "failed": states.count("failed"),
        "infeasible": states.count("infeasible"),
        "unique_configs": len({evaluator.key(t.params) for t in done}),
        "storage": mask_password(run.storage),
        "study": run.study_name,
        "best": best_entry(winners[0] if winners else None),
        "pareto_size": None if objective.single else len(winners),
        "wall_s": time.perf_counter() - tally.start,
        "objective": objective_spec(objective),
        "eval_samples": len(evaluator.y),
        "dimensions": [d.name for d in space.dimensions],
    }
    write_summary(run.out / "summary.json", summary)
    return summary


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


def show_best(console: Console, settings: StrategySettings, study: Any) -> None:
    objective = settings.objective
    rows = ranked(done_trials(study), objective, top=10)
    if not rows:
        console.print("no feasible candidate found")
        return
    title = "best candidates" if objective.single else "Pareto set"
    table = Table(title=title)
    table.add_column("trial", justify="right")
    table.add_column("config")
    for m in objective.names:
        table.add_column(m, justify="right")
    table.add_column("objective", justify="right")
    for t in rows:
        metrics = t.user_attrs["metrics"]
        table.add_row(
            str(t.number),
            config_text(t.params),
            *[f"{metrics[m]:.6g}" for m in objective.names],
            ", ".join(f"{v:.6g}" for v in t.values),
        )
    console.print(table)
    best = rows[0]
    console.print(f"best config: {config_text(best.params)}")
    console.print(f"best score: {', '.join(f'{v:.6g}' for v in best.values)}")
