"""Fine-tune a chosen config: its quantized model trained from the float weights (quantization-
aware), scored on validation data before and after, once on the test split, and written as
a directory that `bitscout export DIR` takes.

The training is `evaluate.qat.Trainer`'s, run as a QAT search runs a candidate (the same plan
identity, seed mixing, threads and fused paths), so a config fine-tuned here with a search's
training settings and seed ends with the weights that search trained for it.

It is in `study` so that `SearchResult.finetune` can call it (`bitscout.finetune`, a module
of that name, would shadow the public function); `bitscout.export` reads what it writes.
"""

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import torch
from rich.console import Console
from torch import nn

from bitscout._core.files import SCHEMA_VERSION, atomic, output_dir, write_text
from bitscout._core.toml import read_toml
from bitscout.data.containers import EvalData, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.forward import floating_dtype, on_device, one_thread, predict
from bitscout.evaluate.metrics import LossFn, forward_sums
from bitscout.evaluate.qat import Trainer, TrainSettings
from bitscout.evaluate.unfused import unfused
from bitscout.quant.apply import QuantPlan, copy_model, parse_plan, quantize_model, resolve_plan
from bitscout.results.console import LOGGER
from bitscout.results.rundir import file_sha256
from bitscout.study.training import train_settings
from bitscout.zoo.train import load_checkpoint

KIND = "finetune"  # metrics.json's `kind`: what marks a fine-tuned directory
FILES = ("model.pt", "best.toml", "metrics.json")


@dataclass(frozen=True)
class FinetuneResult:
    """A fine-tuned config, as `bitscout.finetune` and `SearchResult.finetune` return it.

    Attributes:
        before: validation metrics of the post-training quantized model, name -> value.
        after: validation metrics after quantization-aware training.
        test: metrics on the test data after training; None without test data.
        model: the fine-tuned float model (`quantize_model(model, plan)` is the trained
            candidate).
        epochs: the epochs trained.
        settings: the training settings used (optimizer, learning rate, seed, ...).
        plan: the `[passes.quantize]` table trained.
        out: the directory written (model.pt, best.toml, metrics.json); None when none.
        trial: the search's trial the config came from; None when given directly.
        wall_s: the seconds the fine-tuning took.
    """

    before: dict[str, float]
    after: dict[str, float]
    test: dict[str, float] | None
    model: nn.Module
    epochs: int
    settings: TrainSettings
    plan: dict[str, Any]  # the `[passes.quantize]` table trained
    out: Path | None = None
    trial: int | None = None
    wall_s: float = 0.0


def plan_of(config: Any, key: str = "config") -> dict[str, Any]:
    """The `[passes.quantize]` table of a best.toml path, of the dict such a file holds, or
    the table itself."""
    if isinstance(config, str | Path):
        doc: Any = read_toml(config)
        key = f"{config}: passes.quantize"
        doc = doc.get("passes", {}).get("quantize")
    else:
        doc = config
        if isinstance(doc, Mapping) and "passes" in doc:
            doc = doc["passes"].get("quantize") if isinstance(doc["passes"], Mapping) else None
    if not isinstance(doc, Mapping):
        raise ConfigError(key, "must be a best.toml path or its [passes.quantize] table", doc)
    parse_plan(doc, key)  # refused now, before anything trains
    return dict(doc)


def score(model: nn.Module, data: EvalData, loss_fn: LossFn | None) -> dict[str, float]:
    """Accuracy (class-index targets) and loss (`loss_fn`, else cross-entropy) of `model` on
    `data`, as the search's plain path computes them."""
    sums: dict[str, float] = {}
    with torch.inference_mode(), one_thread(), unfused():
        for x, y in data.batches():
            logits = predict(model, x)
            classes = logits.dim() == 2 and y.dim() == 1 and not y.is_floating_point()
            if not classes and loss_fn is None:
                raise ConfigError("loss_fn", "is needed: the targets are not class indices")
            names = ["accuracy", *(["loss"] if loss_fn is None else [])] if classes else []
            for name, value in forward_sums(names, logits.unsqueeze(1), y).items():
                sums[name] = sums.get(name, 0.0) + float(value[0])
            if loss_fn is not None:
                sums["loss"] = sums.get("loss", 0.0) + float(loss_fn(logits, y)) * len(y)
    return {name: total / data.rows for name, total in sums.items()}


def by_path(model: nn.Module, plan: Mapping[str, Any]) -> QuantPlan:
    """The candidate's formats by module path, as a search's evaluator holds them (what
    seeds its training)."""
    return QuantPlan("name", resolve_plan(model, parse_plan(plan)))


def train_candidate(
    model: nn.Module, plan: Mapping[str, Any], trainer: Trainer
) -> tuple[nn.Module, int]:
    """The quantized model of `plan`, trained from `model`'s weights, and its epochs."""
    resolved = by_path(model, plan)
    candidate = quantize_model(model, resolved)
    epochs = trainer.fit(candidate, resolved.layers)
    return candidate.eval(), epochs


def float_weights(model: nn.Module, candidate: nn.Module) -> nn.Module:
    """A copy of the float `model` holding the trained candidate's latent weights."""
    tuned = copy_model(model)
    tuned.load_state_dict(candidate.state_dict())
    return tuned.eval()


@dataclass(frozen=True)
class Splits:
    """The data of one fine-tuning, prepared: validation, training and test (or None)."""

    val: EvalData
    train: EvalData
    test: EvalData | None = None


def run_finetune(
    model: nn.Module, plan: Mapping[str, Any], data: Splits, settings: TrainSettings, *,
    loss_fn: LossFn | None = None, out: Path | None = None, trial: int | None = None,
    source: Mapping[str, Any] | None = None,
) -> FinetuneResult:  # fmt: skip
    """Fine-tune `plan` on `model` (float, never modified); `source` is recorded in
    metrics.json (where the config came from: a run directory, a trial)."""
    if data.train.x is None or data.train.y is None:
        raise ConfigError("train_data", "must be held in memory (an (x, y) pair) to train on")
    model = on_device(model, data.val.device).eval()
    start = time.perf_counter()
    before = score(quantize_model(model, by_path(model, plan)), data.val, loss_fn)
    trainer = Trainer(data.train.x, data.train.y, settings, loss_fn)
    candidate, epochs = train_candidate(model, plan, trainer)
    after = score(candidate, data.val, loss_fn)
    test = None if data.test is None else score(candidate, data.test, loss_fn)
    tuned = float_weights(model, candidate)
    wall = time.perf_counter() - start
    found = FinetuneResult(before, after, test, tuned, epochs, settings, dict(plan), out, trial,
                           wall)  # fmt: skip
    if out is not None:
        write_finetuned(found, out, source or {})
    return found


def write_finetuned(found: FinetuneResult, out: Path, source: Mapping[str, Any]) -> None:
    """model.pt (the fine-tuned float state dict), best.toml and metrics.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic(out / "model.pt") as tmp:
        torch.save(found.model.state_dict(), tmp)
    trial = {} if found.trial is None else {"trial": found.trial}
    best = {"schema_version": SCHEMA_VERSION, **trial, "passes": {"quantize": found.plan}}
    write_text(out / "best.toml", tomli_w.dumps(best))
    record = {
        "schema_version": SCHEMA_VERSION, "kind": KIND, **trial, **dict(source),
        "before": found.before, "after": found.after, "test": found.test,
        "train": dataclasses.asdict(found.settings), "epochs": found.epochs,
        "seed": found.settings.seed, "wall_s": found.wall_s,
        "model_sha256": file_sha256(out / "model.pt"),
    }  # fmt: skip
    write_text(out / "metrics.json", json.dumps(record, indent=2) + "\n")


def is_finetuned(path: Path) -> bool:
    """Whether `path` is a directory `finetune` wrote."""
    return (Path(path) / "metrics.json").is_file() and not (Path(path) / "summary.json").exists()


def read_finetuned(path: Path) -> dict[str, Any]:
    """metrics.json of a fine-tuned directory, checked to be one."""
    where = Path(path) / "metrics.json"
    try:
        record = json.loads(where.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(str(path), f"not a fine-tuned directory ({err})", file=True) from err
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise ConfigError(str(where), f'must hold a JSON object of kind "{KIND}"', file=True)
    if record.get("schema_version") != SCHEMA_VERSION:
        rule = f"has schema_version {record.get('schema_version')!r}, not {SCHEMA_VERSION}"
        raise ConfigError(str(where), rule, file=True)
    return record


def load_finetuned(path: Path, architecture: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The fine-tuned float model (its model.pt, sha256 checked against metrics.json's,
    loaded into `architecture`) and its `[passes.quantize]` table."""
    path = Path(path)
    record = read_finetuned(path)
    weights = path / "model.pt"
    if weights.is_file() and (found := file_sha256(weights)) != record.get("model_sha256"):
        rule = (f"is not the fine-tuned model: its sha256 is {found}, {path / 'metrics.json'} "
                f"records {record.get('model_sha256')}")  # fmt: skip
        raise ConfigError(str(weights), rule, file=True)
    model = load_checkpoint(architecture, weights).eval()
    return model, plan_of(path / "best.toml")


def finetune(
    model: nn.Module,
    data: Any,
    config: Any,
    *,
    train_data: Any,
    test_data: Any = None,
    train: Mapping[str, Any] | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    loss_fn: LossFn | None = None,
    device: str | torch.device = "cpu",
    show: bool = False,
) -> FinetuneResult:
    """Train one config's quantized model from `model`'s float weights (quantization-aware)
    and score it on `data` before and after, and once on `test_data`.

    Args:
        model: the float `nn.Module`; never modified.
        data: validation data (the forms `bitscout.search` takes).
        config: a best.toml path, the dict it holds, or its `[passes.quantize]` table.
        train_data: the training split, an (x, y) pair (or a Dataset / DataLoader that fits
            in memory); training uses it only.
        test_data: held-out data the fine-tuned model is scored on once.
        train: the training settings, as `bitscout.search(train=...)` takes them (`epochs`,
            `lr`, `optimizer`, `batch_size`, ...); None: the defaults.
        seed: seeds the training; with a QAT search's `train` and `seed`, the config trains
            to the weights that search trained it to.
        out: a directory to write model.pt (the fine-tuned float weights), best.toml and
            metrics.json; `bitscout export OUT` exports it. None writes nothing.
        loss_fn: `loss_fn(outputs, targets)`, the batch mean, trained on and reported as
            `loss` (default cross-entropy).
        device: where the model trains and is scored.
        show: print the before/after line (else it goes to the "bitscout" logger).

    Returns:
        A FinetuneResult: `before`, `after`, `test`, the fine-tuned float `model`, `out`.

    Raises:
        ConfigError: `model` is not an `nn.Module`, `config` is not a best.toml path or its
            table, `data` or `train_data` is missing, or a bad training setting.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("model", "must be a torch.nn.Module", type(model).__name__)
    plan = plan_of(config)
    settings = train_settings({} if train is None else train, seed=seed, python=True)
    where = None if out is None else output_dir(out, "out")
    dtype = floating_dtype(model)
    held = [None if d is None else prepare(d, dtype=dtype, device=device)
            for d in (data, train_data, test_data)]  # fmt: skip
    if held[0] is None or held[1] is None:
        raise ConfigError("data" if held[0] is None else "train_data", "is required")
    splits = Splits(held[0], held[1], held[2])
    found = run_finetune(model, plan, splits, settings, loss_fn=loss_fn, out=where)
    say(found, show)
    return found


def line(found: FinetuneResult) -> str:
    """`trial 3: accuracy 0.8361 -> 0.8894 (test 0.8812), 3 epochs`, loss when no accuracy."""
    name = "accuracy" if "accuracy" in found.after else "loss"
    label = "config" if found.trial is None else f"trial {found.trial}"
    test = "" if found.test is None else f" (test {found.test[name]:.4f})"
    where = "" if found.out is None else f" -> {found.out}"
    return (f"{label}: {name} {found.before[name]:.4f} -> {found.after[name]:.4f}{test}, "
            f"{found.epochs} epochs{where}")  # fmt: skip


def say(found: FinetuneResult, show: bool) -> None:
    if show:
        Console().print(line(found), highlight=False)
    else:
        logging.getLogger(LOGGER).info(line(found))
