"""One search, whoever asked for it: the one code path behind `bitscout.search(...)` and
`bitscout search CONFIG`. A `Job` holds a float model, validation data, a space and the
strategy's settings; `run_job` opens (or resumes) the study, evaluates, and writes the outputs
when the job has an output directory."""

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from rich.console import Console
from torch import nn

from bitscout.data.containers import EvalData
from bitscout.errors import ConfigError, SearchFailed
from bitscout.evaluate.audit import Audit
from bitscout.evaluate.evaluator import Evaluator
from bitscout.evaluate.metrics import Metric, user_records
from bitscout.quant.plan import fx_name
from bitscout.quant.space import Choice, SearchSpace
from bitscout.results.console import Reporter, Verbosity
from bitscout.results.trials import Result, TrialsCsv, quiet_optuna
from bitscout.study.fidelity import ladder_summary
from bitscout.study.fingerprint import fingerprint
from bitscout.study.parallel import check_shareable, fork, join
from bitscout.study.prefetch import prefetch
from bitscout.study.settings import StrategySettings, population_note
from bitscout.study.spec import trial_count
from bitscout.study.store.base import REASON, Store, candidates
from bitscout.study.store.storage import mask_password, open_store
from bitscout.study.strategies import STRATEGIES, SearchContext
from bitscout.study.strategies.base import TrialHook
from bitscout.study.strategies.ilp import FIT_ATTR
from bitscout.study.training import make_trainer, resolve_training

if TYPE_CHECKING:
    from bitscout.results.conclude import Concluded

# Cheap metrics reported for every candidate besides the objective's (latency only on request).
# overflow_rate adds under 1% to a candidate's evaluation on the seed space (about 10-16% on
# jsc-s's four quantized layers): benchmarks/bench_overflow.py.
REPORTED = (
    "accuracy", "loss", "model_size", "model_size_bits", "flops", "bops", "average_bitwidth",
    "memory_density", "overflow_rate",
)  # fmt: skip
CHUNKED_FROM = 100_000  # candidates above which a brute force keeps one trial per chunk
CLASSIFICATION_ONLY = ("accuracy", "loss")  # loss: cross-entropy unless the job has a loss_fn


@dataclass(frozen=True)
class Job:
    """A search to run. `out` None writes nothing (the study lives in memory unless `storage`
    names one); `identity` names the model and data in the study's fingerprint."""

    model: nn.Module
    data: EvalData
    space: SearchSpace
    settings: StrategySettings
    out: Path | None = None
    storage: str | None = None
    study_name: str = "bitscout"
    identity: Mapping[str, Any] = field(default_factory=dict)
    data_settings: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Metric] = field(default_factory=dict)  # the user's own
    loss_fn: Any = None
    model_source: Any = "given"
    config_path: str | None = None
    test_data: EvalData | None = None  # the winners are evaluated on it once, at the end
    train_data: EvalData | None = None  # what candidates train on (settings.train set)
    # None: resume a study of the same search; True: there must be one; False: there must not
    resume: bool | None = None


@dataclass
class Finished:
    """What a job leaves: the study, the evaluator (its cache), and the summary."""

    study: optuna.Study
    evaluator: Evaluator
    summary: dict[str, Any]
    concluded: "Concluded"


def metric_names(job: Job) -> list[str]:
    """The objective's, the constraints', the user's and the cheap reported metrics (those
    that these targets allow: no accuracy or cross-entropy for regression targets)."""
    objective = job.settings.objective
    _, y = next(iter(job.data.batches()))
    classes = not y.is_floating_point() and y.dim() == 1
    skip = () if classes else (("accuracy",) if job.loss_fn else CLASSIFICATION_ONLY)
    reported = [m for m in REPORTED if m not in skip]
    wanted = [*objective.names, *(c.metric for c in objective.constraints), *job.metrics]
    return list(dict.fromkeys([*wanted, *reported]))


def make_evaluator(job: Job) -> Evaluator:
    settings = job.settings
    names = ("latency_repeats", "latency_warmup", "latency_budget_s")
    return Evaluator(
        job.model,
        job.space,
        job.data,
        metric_names(job),
        extra=job.metrics,
        loss_fn=job.loss_fn,
        latency={name: getattr(settings, name) for name in names},
        share_latency=settings.latency_shared,
        audit=Audit(settings.audit_rate, settings.seed),
        trainer=make_trainer(job),
    )


def _brute(settings: StrategySettings) -> bool:
    return settings.name == "bruteforce"


def resolve_chunked(job: Job) -> Job:
    """A brute force over more than CHUNKED_FROM candidates records one trial per chunk
    unless `setup.chunked` says otherwise; every other strategy one per candidate."""
    s = job.settings
    chunked = _brute(s) and (s.chunked if s.chunked is not None else job.space.size > CHUNKED_FROM)
    return dataclasses.replace(job, settings=dataclasses.replace(s, chunked=chunked))


def resolve_trials(job: Job) -> Job:
    """`n_trials` absent: the spec's default for the strategy (the same from both doors)."""
    s = job.settings
    n_trials = trial_count(s.name, s.n_trials)
    return dataclasses.replace(job, settings=dataclasses.replace(s, n_trials=n_trials))


def check_resume(job: Job, stored: int) -> None:
    """`resume=True` needs a study to continue, `resume=False` a fresh one (Python's words:
    only `bitscout.search` sets them)."""
    where = "out" if job.out is not None and job.storage is None else "study"
    if job.resume is True and stored == 0:
        raise ConfigError(
            "resume", f"{where}= holds no trials of study {job.study_name!r} to resume"
        )
    if job.resume is False and stored > 0:
        rule = (f"{where}= holds study {job.study_name!r} with {stored} trials: pass "
                "resume=True to continue it or overwrite=True to replace it")  # fmt: skip
        raise ConfigError(where, rule, str(job.out) if where == "out" else job.study_name)


def storage_of(job: Job) -> str | optuna.storages.BaseStorage:
    """The job's store: as given, else the run's journal file, else memory."""
    if job.storage is not None:
        return job.storage
    if job.out is not None:
        return str(job.out / "study.journal")
    return optuna.storages.InMemoryStorage()


def open_job_store(job: Job, storage: Any, console: Console) -> Store:
    strategy = STRATEGIES.get(job.settings.name, "search.strategy.name")
    sampler = job.settings.sampler_object or strategy.sampler(
        job.settings, job.space, job.settings.objective
    )
    if isinstance(storage, str) and "://" not in storage:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
    notify = lambda message: console.print(message, highlight=False)  # noqa: E731
    meta = fingerprint(job, metric_names(job))
    store = open_store(storage, job.study_name, job.settings.objective, meta, job.space, sampler,
                       notify=notify)  # fmt: skip
    stored = len(store.trials())
    if stored and sampler is not None and job.settings.sampler_object is None:
        # the search's seed again would replay the proposals its first trials already made
        reseeded = dataclasses.replace(job.settings, seed=resumed_seed(job.settings.seed, stored))
        store.study.sampler = strategy.sampler(reseeded, job.space, job.settings.objective)
    return store


def resumed_seed(seed: int, stored: int) -> int:
    """A resumed sampler's seed: the search's, mixed with how many trials the study holds, so
    each resume draws anew and the same resume draws the same."""
    digest = hashlib.sha256(f"{seed}:{stored}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def describe(settings: StrategySettings) -> str:
    if settings.name == "optuna":
        return f"optuna/{settings.sampler} (seed {settings.seed})"
    return settings.name


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


def _strategy(job: Job, store: Store, evaluator: Evaluator, console: Console) -> Any:
    ctx = SearchContext(job.space, evaluator, job.settings.objective, job.settings, store,
                        out=job.out)  # fmt: skip
    ctx.notify = lambda message: console.print(message, highlight=False)
    return ctx


def _worker(job: Job, storage: Any, evaluator: Evaluator, index: int) -> None:
    """Extra worker `index` (forked): the same study, its own seed, no outputs."""
    s = job.settings
    settings = dataclasses.replace(s, seed=s.seed + index, order_seed=s.shuffle_seed)
    job = dataclasses.replace(job, settings=settings)
    console = Console(quiet=True)
    store = open_job_store(job, storage, console)
    STRATEGIES.get(settings.name, "search.strategy.name").run(
        _strategy(job, store, evaluator, console)
    )


def test_evaluator(job: Job, evaluator: Evaluator) -> Evaluator | None:
    """The winners' judge on the held-out split: the same metrics, latency left out."""
    if job.test_data is None:
        return None
    names = [m for m in evaluator.metrics if evaluator.get(m).kind != "timing"]
    return Evaluator(job.model, job.space, job.test_data, names, extra=job.metrics,
                     loss_fn=job.loss_fn, audit=Audit(job.settings.audit_rate),
                     trainer=evaluator.trainer)  # fmt: skip


@quiet_optuna()  # Optuna's lines in none of the search's processes (workers are forked)
def run_job(job: Job, console: Console, verbosity: Verbosity = "normal") -> Finished:
    """Run (or resume) `job`; write its outputs when it has an output directory. `quiet`
    prints only the final result, `verbose` every trial."""
    say = _sayer(console, verbosity)
    job = resolve_training(resolve_trials(resolve_chunked(job)))
    prefetch(report=job.out is not None)
    storage = storage_of(job)
    check_shareable(storage if isinstance(storage, str) else None, job.settings.n_jobs)
    store = open_job_store(job, storage, console)
    if job.out is not None:
        job.out.mkdir(parents=True, exist_ok=True)
    evaluator = make_evaluator(job)
    for split, data in (("test_data", job.test_data), ("train_data", job.train_data)):
        if data is not None:  # the test split's evaluator is made at the end
            evaluator.check_labels(data, split)
    before = store.done()
    check_resume(job, len(before))
    for t in before:  # a resumed search reuses what the store already holds
        evaluator.remember(dict(t.params), dict(t.metrics))
    ctx = _strategy(job, store, evaluator, console)
    ctx.notify = say
    say(f"searching {job.space.size} candidates with {describe(job.settings)}; "
        f"{len(before)} trials already in the store")  # fmt: skip
    for note in (*evaluator.notes, job.space.skipped_note, population_note(job.settings)):
        if note is not None:
            say(note)
    procs = fork(job.settings.n_jobs, lambda i: _worker(job, storage, evaluator, i))
    table = None
    if job.out is not None:
        table = TrialsCsv(job.out / "trials.csv", store, job.space, job.settings.objective,
                          evaluator.metrics)  # fmt: skip
        table.rewrite()
    own = Counted(table)
    start = time.perf_counter()
    try:
        shown: Verbosity = "quiet" if console.quiet else verbosity  # no bar redrawn unseen
        with Reporter(console, ctx.budget(), job.settings.objective, shown) as reporter:
            ctx.on_trial = own.hook(reporter)
            STRATEGIES.get(job.settings.name, "search.strategy.name").run(ctx)
        join(procs, console)
    except BaseException:
        if table is not None:  # keep what finished; an error writing it must not hide this one
            with contextlib.suppress(OSError), contextlib.closing(table):
                write_outputs(job, store, table, Tally(before, own.count, start), evaluator)
        raise
    evaluator.check_intact()  # a candidate's model or a metric may edit the data in place
    tally = Tally(before, own.count, start)
    c, summary = write_outputs(job, store, table, tally, evaluator, test_evaluator(job, evaluator))
    check_failed(summary, store, job.out)
    if summary["complete"] == 0:
        console.print("no trial has finished yet (timeout?): nothing to report")
        return Finished(store.study, evaluator, summary, c)
    from bitscout.results.display import show_result

    units = summary["metric_units"]
    show_result(console, c, job.settings.objective, summary["dimensions"], units, evaluator.rows)
    if job.out is not None:
        say(f"report: {_report(job, job.out, c, summary)}")
    return Finished(store.study, evaluator, summary, c)


def _report(job: Job, out: Path, c: "Concluded", summary: dict[str, Any]) -> Path:
    from bitscout.results.report import Run, load_run  # matplotlib: only once there is a report
    from bitscout.results.report_md import write_report

    objective = job.settings.objective
    if job.settings.chunked:  # its million rows are in memory already: not read back
        run = Run(c.frame, summary, objective, summary["dimensions"])
    else:
        run = load_run(out)
    return write_report(run, objective, out, f"bitscout search: {out.name}")


def _sayer(console: Console, verbosity: Verbosity) -> Callable[[str], None]:
    """Informational lines: on the console unless quiet."""
    if verbosity == "quiet":
        return lambda message: None
    return lambda message: console.print(message, highlight=False)


def write_outputs(
    job: Job,
    store: Store,
    table: TrialsCsv | None,
    tally: Tally,
    evaluator: Evaluator,
    judge: Evaluator | None = None,
) -> tuple["Concluded", dict[str, Any]]:
    """The results and the summary; with an output directory also trials.csv, best.toml,
    pareto.csv (multi-objective) and summary.json. `judge` evaluates the winners on the test
    split."""
    from bitscout.results.conclude import conclude, summarize
    from bitscout.results.outputs import write_best_toml, write_pareto_csv, write_summary

    objective = job.settings.objective
    c = conclude(store, job.space, objective, evaluator, judge)
    dims = [d.name for d in job.space.dimensions]
    summary = search_summary(job, store, tally, evaluator)
    summary.update(summarize(c, objective, dims, evaluator.metrics))
    if table is None or job.out is None:
        return c, summary
    table.finish(c.frame)
    if not c.winners.empty:
        write_best_toml(job.out / "best.toml", job.space, c.winners.iloc[0].to_dict())
    if not objective.single:
        write_pareto_csv(job.out / "pareto.csv", c.winners, dims, evaluator.metrics)
    write_summary(job.out / "summary.json", summary)
    return c, summary


def search_summary(job: Job, store: Store, tally: Tally, evaluator: Evaluator) -> dict[str, Any]:
    """summary.json's part about the search itself: what ran, on what, how long."""
    settings = job.settings
    storage = job.storage or (str(job.out / "study.journal") if job.out else None)
    return {
        "config": job.config_path,
        **job.identity,
        "model_source": job.model_source,
        "strategy": settings.name,
        "sampler": settings.sampler if settings.name == "optuna" else None,
        "seed": settings.seed,
        "space_size": job.space.size,
        "trials_run": tally.own,
        "trials_run_all_workers": candidates(store.done()) - candidates(tally.before),
        "storage": None if storage is None else mask_password(storage),
        "study": job.study_name,
        "wall_s": time.perf_counter() - tally.start,
        "eval_samples": evaluator.rows,
        "audit": evaluator.audit.summary(),  # this worker's fast-engine candidates re-derived
        "dimensions": [d.name for d in job.space.dimensions],
        "metric_units": {m: evaluator.get(m).unit for m in evaluator.metrics},
        "user_metrics": user_records(evaluator.get(m) for m in evaluator.metrics),
        "space": job.space.table(),
        "layers": job.space.types,
        "train": None if settings.train is None else dataclasses.asdict(settings.train),
        "ladder": ladder_summary(store, settings, evaluator.trainer),  # what a ladder spent
        "ilp_fit": store.study_attr(FIT_ATTR),  # an ilp search's surrogate against measurements
        # each layer's public name (trials.csv, best.toml, codes.npz, hls4ml) -> module path
        "layer_names": {fx_name(path): path for path in job.space.types},
    }


def check_failed(summary: Mapping[str, Any], store: Store, out: Path | None) -> None:
    """A search where every candidate failed is an error that says why."""
    if summary["complete"] == 0 and summary["failed"] > 0:
        reasons = [t.user_attrs.get(REASON) for t in store.trials()]
        first = next((r for r in reasons if r), "unknown")
        where = f" (details in {out / 'trials.csv'})" if out is not None else ""
        raise SearchFailed(
            f"all {summary['failed']} evaluated candidates failed; first reason: {first}{where}"
        )
