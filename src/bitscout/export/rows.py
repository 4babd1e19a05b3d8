"""The validation rows an export target needs (hls4ml's input shape and test bench, QONNX's
batch, `verify`): one rule and one message for every target."""

from typing import Protocol

import torch

from bitscout.errors import ConfigError


class HasRows(Protocol):
    @property
    def x(self) -> torch.Tensor | None: ...


def validation_rows(subject: HasRows, target: str) -> torch.Tensor:
    """`subject`'s validation rows, or a ConfigError naming the `target` that needs them."""
    if subject.x is None:
        rule = f"{target} needs validation rows: pass data= (the rows the search used)"
        raise ConfigError("data", rule)
    return subject.x
