"""Formats whose values share an exponent per block of `block_size` values along the last
dimension (a tensor's rows are split into blocks; a last block that is short is padded with
zeros, which change no block's maximum): MASE's block floating point, and the OCP
Microscaling formats MXINT8 and MXFP8/6/4 (OCP MX specification v1.0: an E8M0 power-of-two
scale per block of 32, elements INT8, FP8 E4M3/E5M2, FP6 E2M3/E3M2 or FP4 E2M1)."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bitscout.errors import ConfigError
from bitscout.quant.floats import exponent_of, float_grid
from bitscout.quant.formats import (
    Field,
    NumberFormat,
    int_in,
    int_or_na,
    register_format,
    width_field,
)

SCALE_BITS = 8  # E8M0
SCALE_MIN, SCALE_MAX = -127, 127  # E8M0's exponents (code 255 is NaN)


def block_size_field(default: int) -> Field:
    rule = "an integer in 1..4096"
    return Field("block_size", rule, "integers in 1..4096", int_in(1, 4096), default)


def by_blocks(
    x: torch.Tensor, size: int, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """`fn(blocks, amax)` over blocks of `size` values along the last dimension, in float64:
    `blocks` is [..., n_blocks, size], `amax` each block's largest magnitude [..., n_blocks, 1];
    a block holding a NaN or an infinity is NaN throughout."""
    v = x.double()
    n = v.shape[-1] if v.dim() else 1
    v = v.reshape(*v.shape[:-1], n) if v.dim() else v.reshape(1)
    padded = F.pad(v, (0, -n % size))
    blocks = padded.reshape(*padded.shape[:-1], -1, size)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    # A NaN or an infinity leaves the block no finite shared scale: every value of the block is
    # NaN (torchao's MX does so for a NaN, with E8M0's NaN scale; an infinity there keeps
    # itself and flushes the rest of its block to 0, which no output would show).
    out = torch.where(torch.isfinite(amax), fn(blocks, amax), torch.nan)
    return out.reshape(padded.shape)[..., :n].reshape(x.shape).to(x.dtype)


def amortized(element: float, shared: int, size: int, shape: Sequence[int]) -> float:
    """Bits per value with `shared` bits per block: blocks run along the last dimension."""
    n = shape[-1] if shape else 1
    return element + shared * math.ceil(n / size) / n


class _Blocked(NumberFormat):
    """A format whose values share `shared_bits` per block of `block_size` along the last
    dimension: its bits per value are the element's width plus that share."""

    width: int
    block_size: int

    @property
    def shared_bits(self) -> int:
        return SCALE_BITS  # an E8M0 scale

    @property
    def bits(self) -> float:
        return self.width + self.shared_bits / self.block_size

    def bits_for(self, shape: Sequence[int]) -> float:
        return amortized(self.width, self.shared_bits, self.block_size, shape)


@register_format
@dataclass(frozen=True)
class BlockFP(_Blocked):
    """MASE's `block_fp`: per block, a shared exponent E, the smallest with max|x| < 2**E
    (floor(log2 max|x|) + 1), clamped to [-bias, 2**exponent_width - 1 - bias]; each value is
    k * 2**(E - width + 1) with k a sign-magnitude integer, |k| <= 2**(width-1) - 1, rounded
    half to even and saturated. MASE takes ceil(log2 max|x|), which differs only when the
    maximum is an exact power of two 2**n: MASE shares n and clamps that value to
    (1 - 2**(1-width)) * 2**n, so quantizing its own output changes it; here it stays 2**n.
    Bits per value: width + exponent_width / block_size."""

    name: ClassVar[str] = "block_fp"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        width_field(2, 24),
        Field("exponent_width", "an integer in 1..8", "integers in 1..8", int_in(1, 8), 8),
        int_or_na("exponent_bias", -256, 256),
        block_size_field(16),
    )

    width: int
    exponent_width: int = 8
    exponent_bias: int | None = None
    block_size: int = 16

    def _resolve(self) -> None:
        if self.exponent_bias is None:
            object.__setattr__(self, "exponent_bias", 2 ** (self.exponent_width - 1) - 1)

    @property
    def shared_bits(self) -> int:
        return self.exponent_width

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        bias, m = self.exponent_bias, self.width - 1
        emin, emax = -bias, 2**self.exponent_width - 1 - bias  # type: ignore[operator]

        def block(v: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
            e = exponent_of(amax) + 1
            step = torch.exp2(torch.clamp(e, emin, emax) - m)
            k = torch.clamp(torch.round(v / step), -(2**m - 1), 2**m - 1)
            return k * step

        return by_blocks(x, self.block_size, block)


@register_format
@dataclass(frozen=True)
class MXInt(_Blocked):
    """OCP MXINT8: per block of `block_size` (32) values an E8M0 scale X = 2**s with
    s = floor(log2 max|x|) clamped to [-127, 127]; each value is X * k / 64 with k an 8-bit
    integer, rounded half to even and saturated symmetrically at ±127 (as Microsoft's
    microxcaling library). Bits per value: 8 + 8 / block_size."""

    name: ClassVar[str] = "mxint"
    FIELDS: ClassVar[tuple[Field, ...]] = (width_field(8, 8), block_size_field(32))

    width: int = 8
    block_size: int = 32

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        def block(v: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
            scale = torch.exp2(torch.clamp(exponent_of(amax), SCALE_MIN, SCALE_MAX))
            return torch.clamp(torch.round(v / scale * 64), -127, 127) / 64 * scale

        return by_blocks(x, self.block_size, block)


# OCP MX element types by (width, exponent width): mantissa bits, largest normal value
MX_ELEMENTS = {
    (8, 4): ("FP8 E4M3", 3, 448.0),
    (8, 5): ("FP8 E5M2", 2, 57344.0),
    (6, 2): ("FP6 E2M3", 3, 7.5),
    (6, 3): ("FP6 E3M2", 2, 28.0),
    (4, 2): ("FP4 E2M1", 1, 6.0),
}


@register_format
@dataclass(frozen=True)
class MXFP(_Blocked):
    """OCP MXFP8/6/4: per block of `block_size` (32) values an E8M0 scale X = 2**s with
    s = floor(log2 max|x|) - emax_elem clamped to [-127, 127], emax_elem the exponent of the
    element type's largest normal; each value is X times an element of the type (FP8 E4M3 with
    its 448 maximum, E5M2, FP6 E2M3/E3M2, FP4 E2M1; subnormals kept), rounded half to even
    and saturated at the largest normal. Bits per value: width + 8 / block_size."""

    name: ClassVar[str] = "mxfp"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        width_field(4, 8),
        Field("exponent_width", "an integer in 2..5", "integers in 2..5", int_in(2, 5)),
        block_size_field(32),
    )

    width: int
    exponent_width: int
    block_size: int = 32

    def _resolve(self) -> None:
        if (self.width, self.exponent_width) not in MX_ELEMENTS:
            known = ", ".join(f"{w}/{e} ({n[0]})" for (w, e), n in MX_ELEMENTS.items())
            rule = f"with this width is not an OCP MX element type; known width/exponent: {known}"
            raise ConfigError("exponent_width", rule, self.exponent_width)

    @property
    def element(self) -> tuple[str, int, float]:
        return MX_ELEMENTS[(self.width, self.exponent_width)]

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        _, mantissa, largest = self.element
        emax = math.floor(math.log2(largest))
        emin = 2 - 2 ** (self.exponent_width - 1)  # 1 - bias, the smallest normal exponent

        def block(v: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
            scale = torch.exp2(torch.clamp(exponent_of(amax) - emax, SCALE_MIN, SCALE_MAX))
            q = float_grid((v / scale).abs(), mantissa, emin, largest)
            return torch.copysign(q, v) * scale

        return by_blocks(x, self.block_size, block)
