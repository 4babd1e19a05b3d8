"""From a config file to the pieces the commands work on: the data, the float model (loaded,
trained here, or as its builder made it) and a search `Job`. Parsing only: the work is done
by `job.run_job`, the same code path as `bitscout.search(...)`."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from torch import nn

from bitscout._core.validate import check_keys
from bitscout.cli.config import Config
from bitscout.data.containers import prepare
from bitscout.errors import ConfigError
from bitscout.quant.space import parse_space
from bitscout.results.rundir import file_sha256  # the checksum the run reader checks
from bitscout.study.parallel import check_shareable
from bitscout.study.settings import (
    KEY,
    StrategySettings,
    check_strategy_fields,
    check_training,
    parse_settings,
    toml_key,
)
from bitscout.study.spec import BY_PYTHON, BY_TOML, OURS, check, strategy_pair
from bitscout.zoo.data import Splits, data_warnings, load_dataset
from bitscout.zoo.models import build_model
from bitscout.zoo.plugins import display_name
from bitscout.zoo.train import TrainOptions, load_checkpoint, save_checkpoint, train

if TYPE_CHECKING:
    from bitscout.study.run import Job


@dataclass(frozen=True)
class Overrides:
    """Command-line values, which win over the config's."""

    strategy: str | None = None
    sampler: str | None = None
    trials: int | None = None
    seed: int | None = None


def apply_overrides(settings: StrategySettings, o: Overrides) -> StrategySettings:
    """The flags, checked by the spec's rules (errors name the flag), over the config's."""
    flags = (("--strategy", "strategy", o.strategy), ("--sampler", "sampler", o.sampler),
             ("--trials", "n_trials", o.trials), ("--seed", "seed", o.seed))  # fmt: skip
    given = {name: check(BY_TOML.get(name) or BY_PYTHON[name], value, flag)
             for flag, name, value in flags if value is not None}  # fmt: skip
    strategy, sampler = given.get("strategy"), given.get("sampler")
    if strategy is None:
        strategy = "optuna" if sampler else settings.name
    if strategy in (*OURS, "optuna"):
        sampler = sampler or settings.sampler
    name, sampler = strategy_pair(strategy, sampler, "--sampler")
    changes = {
        "name": name,
        "sampler": sampler,
        "n_trials": given.get("n_trials", settings.n_trials),
        "seed": given.get("seed", settings.seed),
    }
    return dataclasses.replace(settings, **changes)


def check_search(cfg: Config, overrides: Overrides) -> StrategySettings:
    if not cfg.search:
        raise ConfigError("search", "table is required for `bitscout search`")
    check_keys(cfg.search, ("search_space", "strategy"), "search")
    settings = apply_overrides(parse_settings(cfg.search, cfg.seed, cfg.batch_size), overrides)
    # `--strategy greedy` would otherwise run a config's fidelity ladder without climbing it,
    # and `--strategy tpe` ignore a brute force's `order`
    check_training(settings, f"{KEY}.fidelity", f"{KEY}.eval_mode")
    fields = {f: getattr(settings, f) for f in ("order", "warm_start", "chunked", "sensitivity")}
    check_strategy_fields(settings.name, fields, toml_key)
    return settings


def load_data(cfg: Config, console: Console | None = None) -> Splits:
    """The configured dataset's splits; what is suspicious about them is said on `console`."""
    data = load_dataset(
        cfg.dataset, seed=cfg.seed, path=cfg.dataset_path, **dict(cfg.dataset_options)
    )
    for warning in data_warnings(data):
        if console is not None:
            console.print(f"warning: {warning}", highlight=False)
    return data


def make_model(cfg: Config, data: Splits) -> nn.Module:
    """The configured float model, freshly initialised from `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    try:
        return build_model(
            cfg.model,
            num_features=data.num_features,
            num_classes=data.num_classes,
            **dict(cfg.model_options),
        )
    except (MemoryError, RuntimeError) as err:  # torch's allocator raises RuntimeError
        if not isinstance(err, MemoryError) and "alloc" not in str(err).lower():
            raise
        rule = f"model {cfg.model!r} is too large for this machine's memory"
        raise ConfigError("model_options", rule, dict(cfg.model_options)) from err


def train_options(cfg: Config) -> TrainOptions:
    return TrainOptions(
        epochs=cfg.max_epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, seed=cfg.seed,
    )  # fmt: skip


def train_to(cfg: Config, data: Splits, out: Path, console: Console) -> nn.Module:
    """Train the float model on the train split and write its checkpoint into `out`."""
    if data.x_train is None:
        rule = "provides no train split: training needs a dict with 'train', 'val' (and 'test')"
        raise ConfigError("dataset", f"{display_name(cfg.dataset)!r} {rule}")
    model = make_model(cfg, data)
    xy = (data.x_train, data.y_train)
    train(model, xy, train_options(cfg), show=console.is_terminal, name=cfg.model)
    info: dict[str, Any] = {"model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed,
                            "epochs": cfg.max_epochs}  # fmt: skip
    from bitscout.evaluate.evaluator import evaluate_model

    message = f"trained {display_name(cfg.model)} on {display_name(cfg.dataset)}"
    for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test)):
        if x is not None and y is not None and data.num_classes:
            info[f"{split}_accuracy"] = evaluate_model(model, x, y)["accuracy"]
            message += f", {split} accuracy {info[f'{split}_accuracy']:.4f}"
    path = save_checkpoint(model, out, info)
    console.print(f"{message} -> {path}")
    return model


def float_model(
    cfg: Config, data: Splits, load: str | Path | None, out: Path, console: Console
) -> tuple[nn.Module, Any]:
    """The float model and where it came from (`model_source`): the checkpoint at `load`, else
    the one already in `out`, else one trained here (said in one line first), else, for a
    dataset without a train split, the model as its builder made it."""
    if load is None and (out / "model.pt").exists():
        load = out / "model.pt"
        console.print(f"reusing checkpoint {load}", highlight=False)
    if load is not None:
        model = load_checkpoint(make_model(cfg, data), load)
        return model, {"path": str(load), "sha256": file_sha256(Path(load))}
    if data.x_train is None:
        name, dataset = display_name(cfg.model), display_name(cfg.dataset)
        message = f"using {name} with the weights it was built with: {dataset} has "
        console.print(message + "no train split and no checkpoint was given", highlight=False)
        return make_model(cfg, data).eval(), "as built"
    console.print(f"no --load and no checkpoint in {out}: training {display_name(cfg.model)} "
                  f"on {display_name(cfg.dataset)} first", highlight=False)  # fmt: skip
    model = train_to(cfg, data, out, console)  # its checksum, so export refuses another one
    ckpt = out / "model.pt"
    return model, {"trained": True, "path": str(ckpt), "sha256": file_sha256(ckpt)}


def _train_split(cfg: Config, data: Splits, settings: StrategySettings) -> Any:
    """The training split candidates train on with `eval_mode = false`."""
    if settings.train is None:
        return None
    if data.x_train is None or data.y_train is None:
        rule = (f"is false (train every candidate), but dataset {display_name(cfg.dataset)!r} "
                "has no train split")  # fmt: skip
        raise ConfigError("search.strategy.eval_mode", rule)
    return prepare((data.x_train, data.y_train))


@dataclass(frozen=True)
class Where:
    """Where a command-line search writes: its directory, store and study."""

    out: Path
    storage: str
    study: str
    load: str | None = None


def search_job(cfg: Config, where: Where, overrides: Overrides, console: Console) -> "Job":
    """Validate everything, then get the data and the float model: the search as a Job. Bad
    input is refused before anything is written to `where.out`."""
    from bitscout.study.run import Job  # Optuna, pandas, matplotlib: not for `bitscout space`
    from bitscout.study.strategies import STRATEGIES

    settings = check_search(cfg, overrides)
    check_shareable(where.storage, settings.n_jobs)
    data = load_data(cfg, console)
    train = _train_split(cfg, data, settings)
    space = parse_space(cfg.search.get("search_space", {}), make_model(cfg, data))
    # a strategy that cannot search this space (grid or greedy over several formats) says
    # so now, before a model is trained into `where.out`
    STRATEGIES.get(settings.name).sampler(settings, space, settings.objective)
    model, source = float_model(cfg, data, where.load, where.out, console)
    n = settings.num_samples or len(data.y_val)
    test = None if data.x_test is None else prepare((data.x_test, data.y_test))
    return Job(
        train_data=train,
        model=model,
        data=prepare((data.x_val[:n], data.y_val[:n])),
        test_data=test,
        space=space,
        settings=settings,
        out=where.out,
        storage=where.storage,
        study_name=where.study,
        identity={"model": cfg.model, "dataset": cfg.dataset},
        data_settings={
            "seed": cfg.seed,  # the top-level seed splits the data
            "dataset_path": cfg.dataset_path,
            "dataset_options": dict(cfg.dataset_options),
            "num_samples": settings.num_samples,
        },
        model_source=source,
        config_path=None if cfg.source is None else str(cfg.source),
    )
