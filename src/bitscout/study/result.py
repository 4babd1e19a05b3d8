"""What a search found, as `bitscout.search` returns it or `SearchResult.load(out)` rebuilds it
from a run directory (through results/rundir.py, the one reader) without re-running."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from torch import nn

from bitscout._core.files import output_dir
from bitscout.data.containers import EvalData, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.forward import floating_dtype
from bitscout.evaluate.qat import TrainSettings
from bitscout.objective import Objective
from bitscout.quant.apply import QuantPlan, copy_model, quantize_model
from bitscout.quant.plan import fx_name
from bitscout.quant.space import Choice, SearchSpace
from bitscout.results.outputs import plan_table, row_config
from bitscout.results.ranking import objective_columns, rescore, winners
from bitscout.results.rundir import Run, load_run
from bitscout.study.finetune import FinetuneResult, Splits, run_finetune
from bitscout.study.run import Finished, Job
from bitscout.study.spec import check
from bitscout.study.training import TRAIN_PARAMS, train_settings

REPR_CHOICES = 6  # a repr shows this many dimensions of the best config, then "..."


@dataclass(frozen=True)
class Candidate:
    """One evaluated candidate, as `SearchResult.best` and `SearchResult.pareto` hold it.

    Attributes:
        trial: the number of the first trial that evaluated this config.
        config: the config, dimension name (`"<layer>/<field>"`) -> the choice taken.
        metrics: every metric recorded for it, name -> value (units in the summary's
            `metric_units`).
        objective: its objective value(s): one for a weighted sum, one per metric for a
            Pareto search.
        plan: its quantization as a `[passes.quantize]` table (what best.toml holds).
        proposals: how many trials proposed this config (a sampler may propose one twice).
    """

    trial: int
    config: dict[str, Choice]
    metrics: dict[str, float]
    objective: list[float]
    plan: dict[str, Any]
    proposals: int = 1  # how many trials proposed this config


def inputs_of(data: EvalData) -> torch.Tensor:
    """The validation inputs as one tensor (a loader's batches joined)."""
    return data.x if data.x is not None else torch.cat([x for x, _ in data.batches()])


@dataclass(frozen=True)
class Training:
    """What fine-tuning a search's configs reuses from its job: the training and test splits,
    the loss and the training settings (None: a post-training search)."""

    train_data: EvalData | None = None
    test_data: EvalData | None = None
    loss_fn: Any = None
    settings: TrainSettings | None = None


class SearchResult:
    """What a search found, as `bitscout.search` returns it; `SearchResult.load(out)` rebuilds
    one from its run directory.

    Args:
        finished: the concluded run (built by `bitscout.search`, not by hand).
        job: the search's validated parameters, model and data.

    Attributes:
        best (Candidate | None): the best feasible distinct config (for a Pareto search, the
            Pareto member best in the first metric); None when no trial finished or none is
            feasible (`why_no_best()` says which).
        pareto (list[Candidate]): the Pareto set of a multi-objective search, best first;
            empty otherwise.
        trials (pandas.DataFrame): trials.csv's rows, one per trial.
        study (optuna.Study | None): the Optuna study (None for a result loaded from its
            directory).
        summary (dict[str, Any]): what summary.json holds.
        out (Path | None): the run directory (None when the search wrote nothing).
    """

    def __init__(self, finished: Finished, job: Job) -> None:
        c = finished.concluded
        run = Run(c.frame, finished.summary, job.settings.objective,
                  [d.name for d in job.space.dimensions], job.out)  # fmt: skip
        self._setup(run, c.winners, job.space, job.model, job.data)
        self.study: optuna.Study | None = finished.study
        self._train = Training(job.train_data, job.test_data, job.loss_fn, job.settings.train)

    def _setup(self, run: Run, top: pd.DataFrame, space: SearchSpace, model: nn.Module | None,
               data: EvalData | None) -> None:  # fmt: skip
        self._run, self._space, self._model, self._data = run, space, model, data
        self.summary: dict[str, Any] = run.summary
        self.out: Path | None = run.path
        self.trials: pd.DataFrame = run.trials
        found = [self._candidate(row) for row in top.to_dict("records")]
        self.best: Candidate | None = found[0] if found else None
        self.pareto: list[Candidate] = [] if run.objective.single else found

    @classmethod
    def load(
        cls, out: str | Path, model: nn.Module | None = None, data: Any = None
    ) -> "SearchResult":
        """A finished search rebuilt from its directory, without re-running anything.

        Args:
            out: the run directory (`out=` of `bitscout.search`, `--out` of the CLI).
            model: the float model searched, or its architecture when the run recorded a
                checkpoint (the weights are loaded into a copy after their sha256 is checked
                against summary.json's). Without it `quantized_model()` says it is needed.
            data: validation data (the forms `search` takes), for `bitscout.export`'s hls4ml
                input shape and its verification.

        Returns:
            The result, its `best`, `pareto`, `trials` and `summary` as the search left them.

        Raises:
            ConfigError: `out` is not a finished search directory (or one written before runs
                kept their space), or its checkpoint's sha256 is not the one the search
                recorded, or the checkpoint does not fit `model`.
        """
        run = load_run(Path(out))
        space = run.searched_space()
        float_model = None if model is None else run.float_model(lambda: copy_model(model))
        held = None if data is None else prepare(data)
        result = cls.__new__(cls)
        top = winners(rescore(run.trials, run.objective), run.objective, run.dimensions)
        result._setup(run, top, space, float_model, held)
        result.study = None
        recorded = run.summary.get("train")
        result._train = Training(settings=None if recorded is None else TrainSettings(**recorded))
        return result

    def _candidate(self, row: Mapping[str, Any]) -> Candidate:
        config = row_config(row, self._run.dimensions)
        cols = objective_columns(self._run.objective)
        metrics = {m: float(row[m]) for m in self.summary["metric_units"] if m in row}
        return Candidate(int(row["number"]), config, metrics, [float(row[c]) for c in cols],
                         plan_table(self._space, config), int(row["proposals"]))  # fmt: skip

    @property
    def objective(self) -> Objective:
        """The objective searched: its metrics, scales or directions, and constraints."""
        return self._run.objective

    @property
    def best_params(self) -> dict[str, Choice]:
        """The best config, dimension -> choice (Optuna's `Study.best_params`). As in Optuna,
        a multi-objective search has no single best: a RuntimeError points to `pareto`."""
        return dict(self._single_best().config)

    @property
    def best_value(self) -> float:
        """The best objective value (Optuna's `Study.best_value`); a RuntimeError for a
        multi-objective search, as in Optuna, and a ValueError when nothing is feasible."""
        return float(self._single_best().objective[0])

    def _single_best(self) -> Candidate:
        if not self.objective.single:
            raise RuntimeError("a multi-objective search has no single best: use "
                               "`result.pareto` (`result.best` is its member best in the "
                               f"first metric, {self.objective.names[0]})")  # fmt: skip
        if self.best is None:
            raise ValueError(f"no best: {self.why_no_best()}")
        return self.best

    def why_no_best(self) -> str:
        """Why `best` is None.

        Returns:
            "no trial finished" (with the failed count, or a hint of a timeout), or that none
            of the evaluated trials is feasible, naming the constraints.
        """
        evaluated = int(self.summary.get("complete", 0) or 0)
        failed = int(self.summary.get("failed", 0) or 0)
        if evaluated == 0:
            return "no trial finished" + (f" ({failed} failed)" if failed else " (timeout?)")
        limits = ", ".join(str(c) for c in self.objective.constraints) or "the constraints"
        return f"none of {evaluated} evaluated trials is feasible under {limits}"

    def __repr__(self) -> str:
        where = f", out={str(self.out)!r}" if self.out is not None else ""
        count = f"trials={len(self.trials)}"
        if self.best is None:
            return f"SearchResult(best=None: {self.why_no_best()}, {count}{where})"
        shown = list(self.best.config.items())
        config = ", ".join(f"{k}={v!r}" for k, v in shown[:REPR_CHOICES])
        more = ", ..." if len(shown) > REPR_CHOICES else ""
        values = ", ".join(f"{v:.6g}" for v in self.best.objective)
        kind = "objective" if self.objective.single else f"pareto={len(self.pareto)}, objectives"
        return (f"SearchResult(best=trial {self.best.trial} {{{config}{more}}}, "
                f"{kind}={values}, {count}{where})")  # fmt: skip

    def float_model(self) -> nn.Module:
        """The float model searched (not a copy: do not modify it).

        Returns:
            The float model (for a loaded result, the model passed to `load`, its weights
            restored from the run's checkpoint when it recorded one).

        Raises:
            ConfigError: the result was loaded without its model.
        """
        if self._model is None:
            rule = ("is needed: this result was loaded without its float model; "
                    "pass it with SearchResult.load(out, model=...)")  # fmt: skip
            raise ConfigError("model", rule)
        return self._model

    def plan(self, trial: int | None = None) -> dict[str, Any]:
        """The quantization of the best config or of one trial's.

        Args:
            trial: a trial's number; None: the best config.

        Returns:
            A `[passes.quantize]` table (what best.toml holds), as a dict.

        Raises:
            ConfigError: `trial` is None and there is no best, or no evaluated trial has
                that number.
        """
        if trial is not None:
            return plan_table(self._space, self._run.trial_config(trial))
        if self.best is None:
            raise ConfigError("trial", f"is needed: there is no best ({self.why_no_best()})")
        return self.best.plan

    def _public(self, config: Mapping[str, Choice]) -> dict[str, Choice]:
        """`config` with each layer named by its public (fx) name, as dimensions are."""
        names = {path: fx_name(path) for path in self._space.types}
        found = {}
        for key, value in config.items():
            layer, slash, field = key.partition("/")
            found[f"{names.get(layer, layer)}{slash}{field}"] = value
        return found

    def inputs(self) -> torch.Tensor | None:
        """The validation inputs searched on.

        Returns:
            One tensor of every input (a loader's batches joined); None for a loaded result
            given no data.
        """
        return None if self._data is None else inputs_of(self._data)

    def quantized_model(self, config: Mapping[str, Choice] | None = None) -> nn.Module:
        """A new model with the best config (or `config`) applied; the searched model itself is
        never modified.

        Args:
            config: dimension -> choice for every dimension of the space (as
                `Candidate.config`; a dimension's layer may be named by its module path
                too); None: the best config.

        Returns:
            A quantized copy of the float model.

        Raises:
            ConfigError: `config` is None and no feasible candidate was found, `config` lacks
                a dimension, or the result was loaded without its model.
        """
        if config is None:
            if self.best is None:
                raise ConfigError("config", "no feasible candidate was found: pass a config")
            config = self.best.config
        config = self._public(config)
        missing = [d.name for d in self._space.dimensions if d.name not in config]
        if missing:
            raise ConfigError("config", f"lacks the dimensions {', '.join(missing)}")
        plan = QuantPlan("name", self._space.resolved(config))
        return quantize_model(self.float_model(), plan)

    def finetune(
        self, trial: int | None = None, top: int | None = None, epochs: int | None = None,
        lr: float | None = None, out: str | Path | None = None, *, train_data: Any = None,
        test_data: Any = None, settings: TrainSettings | None = None,
    ) -> list[FinetuneResult]:  # fmt: skip
        """Fine-tune the best config (or trial `trial`'s, or the `top` best distinct feasible
        configs) with quantization-aware training from the float weights, as
        `bitscout.finetune` does, with the search's training settings (a post-training
        search: the defaults) and seed; `epochs` and `lr` override them.

        Args:
            trial: the number of the trial whose config is fine-tuned; None: the best
                (or `top`'s). Not with `top`.
            top: fine-tune the `top` best distinct feasible configs (an integer >= 1).
            epochs: the training's epochs instead of the settings' (None: keep them).
            lr: the training's learning rate instead of the settings' (None: keep it).
            out: where each config's `trial_<N>/` directory goes; default `<run out>/finetune`
                (its report.md then gains a "Fine-tuned" section); nothing is written for a
                search without a run directory unless given.
            train_data: the training split, needed when the search kept none (a post-training
                search, or a result loaded from its directory).
            test_data: held-out data (default the search's test split) scored once.
            settings: training settings to use instead of the search's (`epochs` and `lr`
                still override them; the search's seed seeds them).

        Returns:
            One FinetuneResult per config, best first.

        Raises:
            ConfigError: both `trial` and `top` given, `top` not an integer >= 1, no best
                config (or none for `top`), a bad `epochs` or `lr`, or no training split or
                validation data to train with (a loaded result needs `data=` and
                `train_data=`).
        """
        chosen = self._chosen(trial, top)
        settings = self._finetune_settings(settings or self._train.settings, epochs, lr)
        splits = self._splits(train_data, test_data)
        root = self._finetune_root(out)
        found = [
            run_finetune(self.float_model(), plan, splits, settings, loss_fn=self._train.loss_fn,
                         out=None if root is None else root / f"trial_{number}", trial=number,
                         source={"run": None if self.out is None else str(self.out.resolve())})
            for number, plan in chosen
        ]  # fmt: skip
        if root is not None and self.out is not None and root == self.out / "finetune":
            from bitscout.results.report_md import rewrite_report  # matplotlib: only here

            rewrite_report(self.out)
        return found

    def _chosen(self, trial: int | None, top: int | None) -> list[tuple[int, dict[str, Any]]]:
        """(trial number, `[passes.quantize]` table) of each config to fine-tune."""
        if trial is not None and top is not None:
            raise ConfigError("trial", "and top exclude each other: give one", trial)
        if trial is not None:
            return [(trial, self.plan(trial))]
        if top is None:
            if self.best is None:
                raise ConfigError("trial", f"is needed: there is no best ({self.why_no_best()})")
            return [(self.best.trial, self.best.plan)]
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ConfigError("top", "must be an integer >= 1", top)
        ranked = winners(rescore(self.trials, self.objective), self.objective,
                         self._run.dimensions, top)  # fmt: skip
        if ranked.empty:
            raise ConfigError("top", f"finds no config: {self.why_no_best()}", top)
        return [(c.trial, c.plan) for c in map(self._candidate, ranked.to_dict("records"))]

    def _finetune_settings(
        self, base: TrainSettings | None, epochs: int | None, lr: float | None
    ) -> TrainSettings:
        """`base` (else the defaults), seeded by the search's seed, with `epochs` and `lr`
        (checked as `train=`'s) over it."""
        seed = int(self.summary.get("seed") or 0)
        base = base or train_settings({}, seed=seed, python=True)
        params = {p.python: p for p in TRAIN_PARAMS if p.python is not None}
        given = {field: check(params[name], value, name)
                 for name, field, value in (("epochs", "epochs", epochs),
                                            ("lr", "learning_rate", lr))
                 if value is not None}  # fmt: skip
        return dataclasses.replace(base, seed=seed, **given)

    def _splits(self, train_data: Any, test_data: Any) -> Splits:
        val = self._data
        if val is None:
            raise ConfigError("data", "is needed: pass it with SearchResult.load(out, data=...)")
        dtype = floating_dtype(self.float_model())
        train, test = (self._train.train_data, self._train.test_data)
        if train_data is not None:
            train = prepare(train_data, dtype=dtype, device=val.device)
        if test_data is not None:
            test = prepare(test_data, dtype=dtype, device=val.device)
        if train is None:
            rule = ("is needed: this search kept no training split (a post-training search, "
                    "or a loaded result): pass (x, y)")  # fmt: skip
            raise ConfigError("train_data", rule)
        return Splits(val, train, test)

    def _finetune_root(self, out: str | Path | None) -> Path | None:
        if out is not None:
            return output_dir(out, "out")
        return None if self.out is None else self.out / "finetune"
