"""Train a float model and save/load its checkpoint (a plain state dict)."""

import json
import math
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from bitscout.config import Config
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import evaluate_model
from bitscout.files import atomic, write_text
from bitscout.zoo.data import Splits

SCHEMA_VERSION = 1


def _epoch(
    model: nn.Module,
    data: Splits,
    cfg: Config,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
) -> float:
    model.train()
    order = torch.randperm(len(data.y_train), generator=gen)
    total = 0.0
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        if len(idx) < 2 and start > 0:
            continue  # BatchNorm cannot train on a batch of one
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
    return total / len(order)


def _check_batches(model: nn.Module, data: Splits, cfg: Config) -> None:
    """BatchNorm cannot train on a batch of one sample: refuse before torch fails mid-epoch."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if cfg.batch_size < 2:
        rule = f"must be >= 2 for {cfg.model}: its BatchNorm layers need 2 samples per batch"
        raise ConfigError("batch_size", rule, cfg.batch_size)
    if len(data.y_train) < 2:
        rule = (
            f"leave too few training samples for {cfg.model} ({len(data.y_train)}; its "
            "BatchNorm layers need at least 2): raise num_samples or lower the split fractions"
        )
        raise ConfigError("dataset_options", rule)


def train_model(model: nn.Module, data: Splits, cfg: Config, *, show: bool = True) -> nn.Module:
    """Adam with a cosine learning-rate schedule on cross-entropy; seeded by `cfg.seed`."""
    _check_batches(model, data, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = cfg.max_epochs * math.ceil(len(data.y_train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    columns = (
        TextColumn("training"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not show, transient=True) as bar:
        task = bar.add_task("", total=cfg.max_epochs)
        for epoch in range(cfg.max_epochs):
            loss = _epoch(model, data, cfg, opt, sched, gen)
            bar.update(task, advance=1, description=f"epoch {epoch + 1} loss {loss:.4f}")
    return model.eval()


def save_checkpoint(model: nn.Module, data: Splits, cfg: Config, out: Path) -> dict:
    """Write `out/model.pt` and `out/train.json`; return what train.json holds."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    info = {
        "schema_version": SCHEMA_VERSION,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "epochs": cfg.max_epochs,
        "val_accuracy": evaluate_model(model, data.x_val, data.y_val)["accuracy"],
        "test_accuracy": evaluate_model(model, data.x_test, data.y_test)["accuracy"],
    }
    write_text(out / "train.json", json.dumps(info, indent=2) + "\n")
    return info


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
