"""Train a float model and save/load its checkpoint (a plain state dict)."""

import json
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from bitscout._core.files import SCHEMA_VERSION, atomic, write_text
from bitscout.data.containers import check_classes, check_fits, label_range, pair
from bitscout.errors import ConfigError


@dataclass(frozen=True)
class TrainOptions:
    """How `train` trains: Adam with a cosine learning-rate schedule, seeded.

    Attributes:
        epochs: passes over the training data (default 30).
        batch_size: samples per step (default 64; a model with BatchNorm needs >= 2).
        learning_rate: Adam's initial learning rate, annealed to 0 by the cosine schedule
            over all steps (default 1e-3).
        weight_decay: Adam's weight decay (default 0).
        seed: seeds the order of the samples in every epoch (default 0).
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0


def _epoch(
    model: nn.Module,
    xy: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    step: Callable[[torch.Tensor, torch.Tensor], float],
    gen: torch.Generator,
) -> float:
    x, y = xy
    model.train()
    order = torch.randperm(len(y), generator=gen)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2 and start > 0:
            continue  # BatchNorm cannot train on a batch of one
        total += step(x[idx], y[idx]) * len(idx)
    return total / len(order)


def _check_batches(model: nn.Module, rows: int, options: TrainOptions, name: str) -> None:
    """BatchNorm cannot train on a batch of one sample: refuse before torch fails mid-epoch."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if options.batch_size < 2:
        rule = f"must be >= 2 for {name}: its BatchNorm layers need 2 samples per batch"
        raise ConfigError("batch_size", rule, options.batch_size)
    if rows < 2:
        rule = (
            f"leave too few training samples for {name} ({rows}; its BatchNorm layers need at "
            "least 2): raise num_samples or lower the split fractions"
        )
        raise ConfigError("dataset_options", rule)


def train(
    model: nn.Module,
    data: Any,
    options: TrainOptions | None = None,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    show: bool = False,
    name: str = "the model",
) -> nn.Module:
    """Train `model` in place on `data` and return it in eval mode: Adam with a cosine
    schedule on cross-entropy (or `loss_fn`), seeded.

    Args:
        model: the float `nn.Module` to train; its parameters are updated in place.
        data: the training data, an `(x, y)` pair of arrays or tensors.
        options: epochs, batch size, learning rate, weight decay and seed; default
            `TrainOptions()`.
        loss_fn: `loss_fn(outputs, targets)`, the batch mean, replaces cross-entropy.
        show: draw a progress bar with each epoch's loss (off: nothing is printed).
        name: what error messages call the model (a BatchNorm model refuses batches of one).

    Returns:
        `model` itself, trained, in eval mode.

    Raises:
        ConfigError: `data` is not an `(x, y)` pair, `model` does not accept `x`, a label is
            outside the model's classes (with cross-entropy), or a model with BatchNorm would
            train on batches of one sample.
    """
    options = options or TrainOptions()
    x, y = pair(data, "train data")
    x = x.float() if x.is_floating_point() else x
    _check_batches(model, len(y), options, name)
    outputs = check_fits(model, x, "train data")
    if loss_fn is None:  # cross-entropy's targets are class indices
        check_classes(label_range(y), outputs, "train data")
    criterion = loss_fn or F.cross_entropy
    gen = torch.Generator().manual_seed(options.seed)
    opt = torch.optim.Adam(
        model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    steps = options.epochs * math.ceil(len(y) / options.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss = criterion(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())

    columns = (TextColumn("training"), BarColumn(), TextColumn("{task.description}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, disable=not show, transient=True) as bar:
        task = bar.add_task("", total=options.epochs)
        for epoch in range(options.epochs):
            loss = _epoch(model, (x, y), options.batch_size, step, gen)
            bar.update(task, advance=1, description=f"epoch {epoch + 1} loss {loss:.4f}")
    return model.eval()


def save_checkpoint(model: nn.Module, out: Path, info: Mapping[str, Any]) -> Path:
    """Write `out/model.pt` (the state dict) and `out/train.json` (`info`); return the
    checkpoint's path."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    write_text(out / "train.json", json.dumps({"schema_version": SCHEMA_VERSION, **info},
                                              indent=2) + "\n")  # fmt: skip
    return out / "model.pt"


def _load_failure(err: Exception) -> str:
    """Why torch.load failed, in one line. Its weights-only errors wrap the cause in advice to
    pass `weights_only=False`, which bitscout never does, so only the cause is kept; other
    errors (EOFError of an empty file) may have no text at all."""
    text = str(err)
    cause = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.DOTALL)
    lines = [line for line in text.splitlines() if line.strip()]
    detail = cause.group(1) if cause else lines[0] if lines else "empty or truncated file"
    return f"{type(err).__name__}: {' '.join(detail.split())}"


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict into `model` (weights only: pickled code is refused)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # torch warns about a plain pickle's protocol before refusing it: the refusal below
            # says everything, in one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ConfigError(str(path), "checkpoint file not found", file=True) from err
    except Exception as err:
        raise ConfigError(
            str(path),
            "not a loadable weights-only checkpoint (a state dict "
            f"saved by `bitscout train`): {_load_failure(err)}",
            file=True,
        ) from err
    if not isinstance(state, dict):
        raise ConfigError(
            str(path), "checkpoint must hold a state dict", type(state).__name__, file=True
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(
            str(path),
            f"checkpoint does not fit the configured model: {' '.join(str(err).split())}",
            file=True,
        ) from err
    return model.eval()
