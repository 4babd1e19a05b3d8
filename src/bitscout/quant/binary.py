"""One- and two-level formats, as MASE's `binary` and `ternary` quantizers compute them
(deterministic: MASE's stochastic binarization is not offered, since a search compares
candidates that must give the same metrics every time). Their scales are statistics of each
slice along the first dimension: per output channel for a weight, per sample for an input.
A NaN stays NaN: a bipolar value, and every value of a slice whose statistics it enters."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from bitscout.quant.formats import Field, NumberFormat, one_of, register_format

SCALE_BITS = 32  # each slice's scale is a float32


def _slices(x: torch.Tensor) -> torch.Tensor:
    """x as [first dimension, everything else] (a 1-D tensor: each value its own slice)."""
    return x.reshape(len(x), -1) if x.dim() else x.reshape(1, 1)


def _per_slice_bits(element: int, scaled: bool, shape: Sequence[int]) -> float:
    per_slice = 1
    for n in shape[1:]:
        per_slice *= n
    return element + (SCALE_BITS / per_slice if scaled else 0)


@register_format
@dataclass(frozen=True)
class Binary(NumberFormat):
    """`bipolar = true`: +1 where x >= 0, else -1. `bipolar = false` (MASE's default): the
    zero-scaled form, alpha where x > 0, else 0, with alpha the mean |x| of the slice. Bits
    per value: 1, plus the slice's float32 scale when zero-scaled."""

    name: ClassVar[str] = "binary"
    # not a field: a tensor is binarized when any of its fields is set
    width: ClassVar[int] = 1  # type: ignore[misc]  # a constant here, a field of most formats
    FIELDS: ClassVar[tuple[Field, ...]] = (
        one_of("bipolar", (False, True), False),
        one_of("stochastic", (False,), False),
    )

    bipolar: bool = False
    stochastic: bool = False

    def bits_for(self, shape: Sequence[int]) -> float:
        return _per_slice_bits(1, not self.bipolar, shape)

    def grid(self) -> tuple[int, int] | None:
        return (0, 1) if self.bipolar else None  # ±1; else a scale from the data

    def signature(self) -> tuple:
        return (self.name, self.bipolar)

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        if self.bipolar:
            return torch.where(torch.isnan(x), x, torch.where(x >= 0, 1.0, -1.0)).to(x.dtype)
        flat = _slices(x.double())
        alpha = flat.abs().mean(dim=1, keepdim=True)  # NaN for a slice holding a NaN
        out = torch.where((flat > 0) | alpha.isnan(), alpha, 0.0)
        return out.reshape(x.shape).to(x.dtype)


@register_format
@dataclass(frozen=True)
class Ternary(NumberFormat):
    """Per slice, delta = 0.75 * mean|x|: +1 where x > delta, -1 where x < -delta, else 0;
    with `scaling_factor = true`, ±alpha instead of ±1, alpha the mean |x| of the slice's
    values beyond delta (MASE's `ternary`, which needs 4-D tensors, generalized to any
    shape). Bits per value: 2, plus the slice's float32 scale when scaled."""

    name: ClassVar[str] = "ternary"
    # not a field: a tensor is ternarized when its field is set
    width: ClassVar[int] = 2  # type: ignore[misc]  # a constant here, a field of most formats
    FIELDS: ClassVar[tuple[Field, ...]] = (one_of("scaling_factor", (False, True), False),)

    scaling_factor: bool = False

    def bits_for(self, shape: Sequence[int]) -> float:
        return _per_slice_bits(2, self.scaling_factor, shape)

    def grid(self) -> tuple[int, int] | None:
        return None if self.scaling_factor else (0, 1)  # -1, 0, 1; else a scale from the data

    def signature(self) -> tuple:
        return (self.name, self.scaling_factor)

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        flat = _slices(x.double())
        a = flat.abs()
        delta = 0.75 * a.mean(dim=1, keepdim=True)
        level = (flat > delta).double() - (flat < -delta).double()
        if self.scaling_factor:
            beyond = a > delta
            alpha = (a * beyond).sum(dim=1, keepdim=True) / beyond.sum(dim=1, keepdim=True)
            level = level * torch.nan_to_num(alpha)  # a slice of zeros has nothing beyond
        # A NaN leaves the slice no threshold: the whole slice is NaN, as a block's scale.
        level = torch.where(flat.isnan().any(dim=1, keepdim=True), torch.nan, level)
        return level.reshape(x.shape).to(x.dtype)
