"""Model registry: the MASE jet-substructure MLPs, a configurable MLP and a small CNN.

Every model keeps its layers in one `seq_blocks` Sequential, as MASE's JSC models do, so a
MASE config's `seq_blocks_2` names the same layer here.
"""

import inspect
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from bitscout._core.registry import Registry
from bitscout._core.validate import unknown
from bitscout.errors import ConfigError
from bitscout.zoo.plugins import call_plugin, display_name, is_spec, load_callable

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")


class SeqModel(nn.Module):
    """A model whose whole body is `self.seq_blocks`."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.seq_blocks = nn.Sequential(*layers)

    def forward(self, x):  # noqa: ANN001, ANN201 - torch's own signature
        return self.seq_blocks(x)


def _check_io(name: str, num_features: int | None, num_classes: int | None) -> None:
    """The JSC models are fixed at 16 features in, 5 classes out."""
    if num_features not in (None, 16) or num_classes not in (None, 5):
        raise ConfigError(
            "model",
            f"{name} takes 16 features and 5 classes (the jsc data), the dataset has "
            f"{num_features} features and {num_classes} classes",
        )


@MODELS.register("jsc-tiny")
def jsc_tiny(*, num_features: int | None = None, num_classes: int | None = None) -> nn.Module:
    _check_io("jsc-tiny", num_features, num_classes)
    return SeqModel(nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5), nn.ReLU())


@MODELS.register("jsc-toy")
def jsc_toy(*, num_features: int | None = None, num_classes: int | None = None) -> nn.Module:
    _check_io("jsc-toy", num_features, num_classes)
    return SeqModel(
        nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8),
        nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8),
        nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5),
        nn.BatchNorm1d(5), nn.ReLU(),
    )  # fmt: skip


@MODELS.register("jsc-s")
def jsc_s(*, num_features: int | None = None, num_classes: int | None = None) -> nn.Module:
    _check_io("jsc-s", num_features, num_classes)
    return SeqModel(
        nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 5), nn.BatchNorm1d(5), nn.ReLU(),
    )  # fmt: skip


def _positive(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, "must be a positive integer", value)
    return value


@MODELS.register("mlp")
def mlp(
    *, num_features: int | None = None, num_classes: int | None = None,
    hidden: list[int] | tuple[int, ...] = (64, 32),
) -> nn.Module:  # fmt: skip
    """Linear + ReLU blocks; the defaults fit the 8x8 digits (64 features, 10 classes)."""
    if not isinstance(hidden, list | tuple):
        raise ConfigError("model_options.hidden", "must be a list of positive integers", hidden)
    sizes = [_positive(num_features or 64, "num_features")]
    sizes += [_positive(h, "model_options.hidden") for h in hidden]
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], _positive(num_classes or 10, "num_classes")))
    return SeqModel(*layers)


@MODELS.register("cnn")
def cnn(
    *, num_features: int | None = None, num_classes: int | None = None, channels: int = 8
) -> nn.Module:
    """Two 3x3 convolutions over a square one-channel image given as flat features."""
    side = round((num_features or 64) ** 0.5)
    if side * side != (num_features or 64) or side < 4:
        raise ConfigError(
            "model", "cnn needs a square image of at least 4x4 pixels as features", num_features
        )
    c = _positive(channels, "model_options.channels")
    return SeqModel(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * c * (side // 4) ** 2, _positive(num_classes or 10, "num_classes")),
    )  # fmt: skip


def register_model(name: str, builder: Builder) -> None:
    """Make `builder(**options)` the model `name` (`model = "name"` in a config, options from
    `[model_options]`).

    Args:
        name: the name a config's `model` key uses.
        builder: returns a new float `nn.Module`; it may also take `num_features` and
            `num_classes`, which it is given from the data.

    Raises:
        ValueError: `name` is already registered.
    """
    MODELS.register(name)(builder)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model `name` (registered, or a plug-in spec `file.py:build`); `kwargs` are its
    options, and `num_features`/`num_classes` from the data, which a builder may take or not."""
    builder = load_callable(name, "model") if is_spec(name) else MODELS.get(name, "model")
    allowed = _parameters(builder)
    data: dict[str, Any] = {k: kwargs.pop(k) for k in DATA_OPTIONS if k in kwargs}
    takes_any = allowed is None or any(p.kind is p.VAR_KEYWORD for p in allowed.values())
    data = {k: v for k, v in data.items() if takes_any or k in (allowed or {})}
    if is_spec(name):
        model = call_plugin(builder, {**kwargs, **data}, name, "model")
    else:
        for option in kwargs:
            if option not in (allowed or {}):
                known = [p for p in allowed or {} if p not in DATA_OPTIONS]
                raise ConfigError(
                    f"model_options.{option}", unknown(f"option for {name}", option, known)
                )
        model = builder(**kwargs, **data)
    if not isinstance(model, nn.Module):
        rule = f"{display_name(name)!r} returned {type(model).__name__}, not a torch.nn.Module"
        raise ConfigError("model", rule)
    return model


DATA_OPTIONS = ("num_features", "num_classes")


def _parameters(fn: Builder) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
