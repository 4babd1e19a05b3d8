"""Number formats and the pure fake-quantization arithmetic.

Only arithmetic lives here; the layer wrappers are in `bitscout.quant.layers`.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from bitscout.errors import ConfigError

Rounding = Literal["half_even", "half_up", "floor"]
Overflow = Literal["saturate", "wrap"]
ROUNDINGS: tuple[str, ...] = ("half_even", "half_up", "floor")
OVERFLOWS: tuple[str, ...] = ("saturate", "wrap")
MAX_WIDTH = 32
MAX_ABS_FRAC = 64  # beyond this 2**frac leaves float32's exponent range


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Integer:
    """Signed fixed point: the values k / 2**frac_width, k in [-2**(width-1), 2**(width-1) - 1].

    `frac_width=None` (or MASE's "NA") means `width // 2` and is resolved at construction, so
    `Integer(8, None) == Integer(8, 4)`. `rounding` is `half_even` (MASE, torch.round),
    `half_up` (hls4ml AP_RND: ties towards +inf) or `floor` (hls4ml AP_TRN: towards -inf);
    `overflow` is `saturate` (clamp; MASE, hls4ml AP_SAT) or `wrap` (two's complement;
    hls4ml AP_WRAP). In hls4ml terms this is `ap_fixed<width, width - frac_width>`.
    """

    width: int
    frac_width: int | None = None
    rounding: Rounding = "half_even"
    overflow: Overflow = "saturate"

    def __post_init__(self) -> None:
        if not _is_int(self.width) or not 1 <= self.width <= MAX_WIDTH:
            raise ConfigError("width", f"must be an integer in 1..{MAX_WIDTH}", self.width)
        if self.frac_width is None or self.frac_width == "NA":
            object.__setattr__(self, "frac_width", self.width // 2)
        elif not _is_int(self.frac_width) or abs(self.frac_width) > MAX_ABS_FRAC:
            rule = f"must be an integer in -{MAX_ABS_FRAC}..{MAX_ABS_FRAC} or None (width // 2)"
            raise ConfigError("frac_width", rule, self.frac_width)
        if self.rounding not in ROUNDINGS:
            raise ConfigError("rounding", f"must be one of {list(ROUNDINGS)}", self.rounding)
        if self.overflow not in OVERFLOWS:
            raise ConfigError("overflow", f"must be one of {list(OVERFLOWS)}", self.overflow)

    @property
    def bits(self) -> int:
        """Storage bits of one value."""
        return self.width

    @property
    def step(self) -> float:
        return 2.0**-self.frac_width  # type: ignore[operator]

    @property
    def k_min(self) -> int:
        return -(2 ** (self.width - 1))

    @property
    def k_max(self) -> int:
        return 2 ** (self.width - 1) - 1


NumberFormat = Integer


def _round(scaled: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "half_even":
        return torch.round(scaled)
    low = torch.floor(scaled)
    if mode == "floor":
        return low
    # floor(x + 0.5) would round x + 0.5 itself for |x| >= 2**23 in float32; x - floor(x) is exact.
    return torch.where(scaled - low >= 0.5, low + 1, low)


def _overflow(k: torch.Tensor, fmt: Integer) -> torch.Tensor:
    if fmt.overflow == "saturate":
        return torch.clamp(k, fmt.k_min, fmt.k_max)
    # fmod by a power of two is exact; the shifts below are exact by Sterbenz's lemma.
    span = 2.0**fmt.width
    r = torch.fmod(k, span)
    r = torch.where(r > fmt.k_max, r - span, r)
    return torch.where(r < fmt.k_min, r + span, r)


def float32_exact(fmt: Integer) -> bool:
    """Whether float32 arithmetic quantizes to `fmt` exactly. It does for the common formats;
    the exceptions are integers past 2**24, wrap-around of huge or infinite scaled values, and
    underflow of tiny inputs scaled by a negative frac width."""
    return fmt.width <= 24 and fmt.overflow == "saturate" and fmt.frac_width >= 0  # type: ignore[operator]


def _needs_float64(x: torch.Tensor, fmt: Integer) -> bool:
    return x.dtype != torch.float64 and not float32_exact(fmt)


def _below(limit: float, dtype: torch.dtype) -> float:
    """The largest value of `dtype` that is <= `limit` (float32 rounds 2**31 - 1 up)."""
    value = torch.tensor(limit, dtype=torch.float64).to(dtype)
    if float(value) > limit:
        value = torch.nextafter(value, torch.zeros((), dtype=dtype))
    return float(value)


def quantize_values(x: torch.Tensor, fmt: Integer) -> torch.Tensor:
    """The values of `x` on `fmt`'s grid, with no gradient bookkeeping.

    Formats wider than float's 24-bit mantissa cannot be represented exactly in float32;
    their results are the nearest float32 values that stay inside the format's range.
    """
    scale = 2.0**fmt.frac_width  # type: ignore[operator]
    if not _needs_float64(x, fmt):
        # Multiplying and dividing by a power of two is exact in floating point.
        return _overflow(_round(x * scale, fmt.rounding), fmt) / scale
    q = (_overflow(_round(x.double() * scale, fmt.rounding), fmt) / scale).to(x.dtype)
    return torch.clamp(q, -_below(-fmt.k_min / scale, x.dtype), _below(fmt.k_max / scale, x.dtype))


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor, fmt: Integer) -> torch.Tensor:
        return quantize_values(x, fmt)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def quantize(x: torch.Tensor, fmt: Integer | None) -> torch.Tensor:
    """Fake-quantize `x` to `fmt` (float values on its grid); `fmt=None` returns `x`.

    The gradient is straight-through: the identity everywhere, including for values that
    were clipped by saturation (as MASE does), so training through a saturated value still
    moves it back into range.
    """
    if fmt is None:
        return x
    if x.requires_grad:
        return _StraightThrough.apply(x, fmt)
    return quantize_values(x, fmt)
