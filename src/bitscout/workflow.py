"""Steps the commands share: config -> data -> model (trained or loaded)."""

from pathlib import Path

from rich.console import Console
from torch import nn

from bitscout.config import Config
from bitscout.errors import ConfigError
from bitscout.zoo.data import Splits, data_warnings, load_dataset
from bitscout.zoo.models import build_model
from bitscout.zoo.train import load_checkpoint, save_checkpoint, train_model


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
    import torch

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


def train_to(cfg: Config, data: Splits, out: Path, console: Console) -> nn.Module:
    """Train the float model and write its checkpoint into `out`."""
    model = train_model(make_model(cfg, data), data, cfg, show=console.is_terminal)
    info = save_checkpoint(model, data, cfg, out)
    console.print(
        f"trained {cfg.model} on {cfg.dataset}: val accuracy "
        f"{info['val_accuracy']:.4f}, test accuracy {info['test_accuracy']:.4f} "
        f"-> {out / 'model.pt'}"
    )
    return model


def existing_model(
    cfg: Config, data: Splits, load: str | Path | None, out: Path, console: Console
) -> nn.Module | None:
    """The checkpoint at `load`, else the one already in `out`; None if one must be trained."""
    if load is None and (out / "model.pt").exists():
        load = out / "model.pt"
        console.print(f"reusing checkpoint {load}")
    return None if load is None else load_checkpoint(make_model(cfg, data), load)


def float_model(
    cfg: Config, data: Splits, load: str | Path | None, out: Path, console: Console
) -> nn.Module:
    """The checkpoint at `load`, else the one already in `out`, else train one there."""
    model = existing_model(cfg, data, load, out, console)
    return model if model is not None else train_to(cfg, data, out, console)
