"""A quantized layer as fixed-point hardware computes it: the accumulator and result formats
that make the hardware exact for what bitscout scores, and the arithmetic of narrower ones a
user fixes.

The arithmetic is hls4ml's dense layer (`nnet_dense_latency.h`): each product and the bias
are cast to the accumulator type, the products are added to the bias in input order with
the accumulator's overflow applied after every addition, and the sum is cast to the result
type; every cast uses the layer's rounding and overflow. With the exact accumulator none of
these casts changes a value, so the layer equals the plain float computation.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from bitscout.quant.formats import Integer, NumberFormat, quantize

FLOAT32_EXACT_INT = 2**24  # float32 holds every integer of at most this magnitude
FLOAT32_MIN_STEP = -149  # its smallest subnormal, 2**-149


@dataclass(frozen=True)
class Fixed:
    """A signed fixed-point type of any width: `ap_fixed<width, width - frac>`."""

    width: int
    frac: int

    @property
    def integer(self) -> int:
        return self.width - self.frac


def signed_width(lo: int, hi: int) -> int:
    """The fewest bits of a two's-complement integer that holds every value in [lo, hi]."""
    need_hi = hi.bit_length() + 1 if hi > 0 else 1
    need_lo = (-lo - 1).bit_length() + 1 if lo < 0 else 1
    return max(need_hi, need_lo)


class FixedLike(Protocol):
    """Any signed fixed-point format: an `Integer`, or a hardware type wider than 32 bits."""

    @property
    def width(self) -> int: ...
    @property
    def frac_width(self) -> int | None: ...


def _codes(fmt: FixedLike) -> tuple[int, int]:
    return -(2 ** (fmt.width - 1)), 2 ** (fmt.width - 1) - 1


def exact_frac(data_in: FixedLike, weight: FixedLike, bias: FixedLike | None) -> int:
    """The accumulator's frac width that holds every product and the bias exactly."""
    frac = _frac(data_in) + _frac(weight)
    return frac if bias is None else max(frac, _frac(bias))


def _frac(fmt: FixedLike) -> int:
    """A resolved format's frac width (an `Integer` resolves None to width // 2)."""
    return fmt.width // 2 if fmt.frac_width is None else fmt.frac_width


def exact_accum(
    data_in: FixedLike, weight: FixedLike, bias: FixedLike | None, fan_in: int
) -> Fixed:
    """The narrowest accumulator that never rounds or overflows: the worst case of `fan_in`
    products of any input and weight codes of their formats, plus any bias code. Every partial
    sum lies between the bias and that worst case, so none overflows either."""
    frac = exact_frac(data_in, weight, bias)
    corners = [x * w for x in _codes(data_in) for w in _codes(weight)]
    shift = 2 ** (frac - data_in.frac_width - weight.frac_width)  # type: ignore[operator]
    lo, hi = fan_in * min(corners) * shift, fan_in * max(corners) * shift
    if bias is not None:
        b_lo, b_hi = _codes(bias)
        scale = 2 ** (frac - bias.frac_width)  # type: ignore[operator]
        lo, hi = lo + b_lo * scale, hi + b_hi * scale
    return Fixed(signed_width(lo, hi), frac)


@functools.lru_cache(maxsize=4096)
def sum_dtype(
    data_in: NumberFormat | None, weight: NumberFormat | None, bias: NumberFormat | None,
    fan_in: int,
) -> torch.dtype | None:  # fmt: skip
    """The dtype a quantized layer's products and sums must be computed in to be exact, or
    None where float32 already is. With operands on fixed grids (`NumberFormat.grid`), every
    product and partial sum, in any order, is an integer multiple of the finest step, no
    larger in magnitude than `fan_in` largest products plus the largest bias: float32 holds
    it exactly while that integer is at most 2**24 and its binades are float32's. Otherwise
    float64: exact up to 2**53 steps (two 16-bit operands over 2**21 products), beyond that
    the float64 sum (off by under 2**-52 of its value). A float operand (None) leaves the
    layer float: it runs in the model's dtype."""
    if data_in is None or weight is None:
        return None
    grids = [f.grid() for f in (data_in, weight, bias) if f is not None]
    known = [g for g in grids if g is not None]
    if len(known) < len(grids):
        return torch.float64
    (ex, kx), (ew, kw), *rest = known
    step = min([ex + ew, *(e for e, _ in rest)])
    steps = fan_in * kx * kw * 2 ** (ex + ew - step) + sum(k * 2 ** (e - step) for e, k in rest)
    narrow = steps <= FLOAT32_EXACT_INT and step >= FLOAT32_MIN_STEP and step + 24 <= 127
    return None if narrow else torch.float64


Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def computed_in(
    dtype: torch.dtype | None, op: Op, x: torch.Tensor, weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """`op(x, weight, bias)` computed in `dtype` (`sum_dtype`'s answer; None: as given) and
    returned in x's dtype: the exact sum rounded once to the activations' precision."""
    if dtype is None or x.dtype == dtype:
        return op(x, weight, bias)
    wide = op(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
    return wide.to(x.dtype)


def fan_in(layer: nn.Module) -> int:
    """How many products one output of a Linear or Conv layer sums."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    kernel = 1
    for k in layer.kernel_size:  # type: ignore[union-attr]
        kernel *= k
    return int(layer.in_channels // layer.groups * kernel)  # type: ignore[operator]


def accumulate(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, accum: Integer
) -> torch.Tensor:
    """x @ weight.T + bias through an `accum`-typed accumulator, in float64 (exact while the
    input and weight widths add up to at most 53 bits)."""
    products = quantize(x.double()[..., None, :] * weight.double(), accum)
    total = torch.zeros(products.shape[:-1], dtype=torch.float64, device=x.device)
    if bias is not None:
        total = total + quantize(bias.double(), accum)
    if accum.overflow == "wrap":
        # Two's complement addition is modular: wrapping once at the end is the same.
        return quantize(total + products.sum(-1), accum)
    partial = total[..., None] + products.cumsum(-1)
    if partial.min() >= accum.k_min * accum.step and partial.max() <= accum.k_max * accum.step:
        return partial[..., -1]  # no partial sum saturates
    for j in range(products.shape[-1]):
        total = quantize(total + products[..., j], accum)
    return total


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    accum: Integer | None, result: Integer | None,
) -> torch.Tensor:  # fmt: skip
    """A quantized Linear layer's output with the accumulator and result types given."""
    if accum is None:
        out = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    else:
        out = accumulate(x, weight, bias, accum)
    return (out if result is None else quantize(out, result)).to(x.dtype)


def cast_result(out: torch.Tensor, result: Integer | None) -> torch.Tensor:
    """A convolution's output cast to its result type (its accumulator is the exact one)."""
    return out if result is None else quantize(out.double(), result).to(out.dtype)
