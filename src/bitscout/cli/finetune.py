"""`bitscout finetune RUN_DIR`: fine-tune a finished search's best config (or `--trial N`, or
the `--top K` best) with quantization-aware training, as `SearchResult.finetune` does; and
`bitscout export` of a fine-tuned directory (RUN_DIR/finetune/trial_N)."""

import argparse
from pathlib import Path
from typing import Any

from bitscout.cli.common import console
from bitscout.errors import ConfigError
from bitscout.zoo.plugins import display_name

MIN_TOP = 1


def _flag(name: str, value: Any, flag: str) -> Any:
    """A training flag checked by `train=`'s rule for `name`, the error naming `flag`."""
    from bitscout.study.spec import check
    from bitscout.study.training import TRAIN_PARAMS

    (param,) = [p for p in TRAIN_PARAMS if p.python == name]
    return None if value is None else check(param, value, flag)


def _check_args(args: argparse.Namespace) -> tuple[int | None, float | None]:
    """Every flag refused before the data is loaded or a model trained."""
    if args.top is not None and args.top < MIN_TOP:
        raise ConfigError("--top", f"must be an integer >= {MIN_TOP}", args.top)
    return _flag("epochs", args.epochs, "--epochs"), _flag("lr", args.lr, "--lr")


def cmd_finetune(args: argparse.Namespace) -> int:
    from bitscout.cli.build import Overrides, check_search, load_data
    from bitscout.cli.export import float_model_of, run_config
    from bitscout.results.rundir import load_run
    from bitscout.study.finetune import line
    from bitscout.study.result import SearchResult

    epochs, lr = _check_args(args)
    run_dir = Path(args.run_dir)
    run = load_run(run_dir)
    if args.trial is not None:
        run.trial_config(args.trial, "--trial")  # an unknown trial before any work
    cfg = run_config(run_dir, run.summary, args.config)
    data = load_data(cfg, console)
    if data.x_train is None or data.y_train is None:
        rule = f"{display_name(cfg.dataset)!r} has no train split: fine-tuning trains on it"
        raise ConfigError("dataset", rule)
    settings = check_search(cfg, Overrides()).train  # the config's basic_train, if any
    rows = int(run.summary["eval_samples"])  # the validation rows the search scored on
    result = SearchResult.load(run_dir, float_model_of(run, cfg, data),
                               (data.x_val[:rows], data.y_val[:rows]))  # fmt: skip
    test = None if data.x_test is None else (data.x_test, data.y_test)
    found = result.finetune(args.trial, args.top, epochs, lr, train_data=(data.x_train,
                            data.y_train), test_data=test, settings=settings)  # fmt: skip
    for each in found:
        console.print(line(each), highlight=False, soft_wrap=True)  # one line per config
    console.print(f"report written to {run_dir / 'report.md'}", highlight=False)
    return 0


def finetuned_subject(path: Path, args: argparse.Namespace, config: str | None) -> Any:
    """A fine-tuned directory's model and plan, its architecture and validation rows from the
    run it came from (metrics.json's `run`, else the directory two levels up)."""
    from bitscout.cli.build import load_data, make_model
    from bitscout.cli.export import config_subject, run_config
    from bitscout.export.run import finetuned_subject as loaded
    from bitscout.results.rundir import load_run
    from bitscout.study.finetune import read_finetuned

    if args.quant is not None:
        raise ConfigError("--quant", f"does not apply to a fine-tuned directory ({path})")
    recorded = read_finetuned(path).get("run")
    run_dir = Path(recorded) if recorded and Path(recorded).is_dir() else path.parent.parent
    run = load_run(run_dir)
    cfg = run_config(run_dir, run.summary, config)
    data = load_data(cfg)
    model, plan, label = loaded(path, args.trial, make_model(cfg, data), "--trial")
    return config_subject(model, plan, cfg.source or Path(), data.x_val, label)
