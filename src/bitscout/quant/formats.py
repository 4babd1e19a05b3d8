"""Number formats: one protocol, a registry filled by a decorator, and the shared
fake-quantization wrapper with its straight-through gradient.

A format is a frozen dataclass, so it is hashable and the engine's caches key on it; equal
formats share entries. It declares its TOML fields (`FIELDS`, with MASE's names: a tensor's
field is `<tensor>_<suffix>`, a layer field such as `rounding` has no prefix), validates
them, quantizes exactly, and says how many bits a value takes. Signed fixed point, `Integer`,
lives here; the others are in `floats`, `blocks` and `binary`, and `bitscout.quant.catalog`
imports them all so that the registry is complete.
"""

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from bitscout._core.registry import Registry
from bitscout.errors import ConfigError

Rounding = Literal["half_even", "half_up", "floor"]
Overflow = Literal["saturate", "wrap"]
ROUNDINGS: tuple[str, ...] = ("half_even", "half_up", "floor")
OVERFLOWS: tuple[str, ...] = ("saturate", "wrap")
MAX_WIDTH = 32
MAX_ABS_FRAC = 64  # beyond this 2**frac leaves float32's exponent range
REQUIRED = object()  # a field without a default


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_in(lo: int, hi: int) -> Callable[[object], bool]:
    return lambda v: is_int(v) and lo <= v <= hi  # type: ignore[operator]


@dataclass(frozen=True)
class Field:
    """One TOML field of a format: `rule` completes "must be ..." and `rules` "choices must
    be ..."; `layer` fields hold one value for the whole layer."""

    suffix: str
    rule: str
    rules: str
    check: Callable[[object], bool]
    default: object = REQUIRED
    layer: bool = False


def width_field(lo: int, hi: int, default: object = REQUIRED) -> Field:
    return Field("width", f"an integer in {lo}..{hi}", f"integers in {lo}..{hi}",
                 int_in(lo, hi), default)  # fmt: skip


def one_of(suffix: str, allowed: Sequence[object], default: object, layer: bool = False) -> Field:
    def check(v: object) -> bool:
        return v in allowed and type(v) is type(allowed[0])

    return Field(suffix, f"one of {list(allowed)}", f"among {list(allowed)}", check, default, layer)


def int_or_na(suffix: str, lo: int, hi: int) -> Field:
    """An integer field where "NA" asks for the format's default."""
    return Field(suffix, f'an integer in {lo}..{hi} or "NA"', f'integers in {lo}..{hi} or "NA"',
                 lambda v: v == "NA" or int_in(lo, hi)(v), "NA")  # fmt: skip


class NumberFormat:
    """What every format provides. Subclasses are frozen dataclasses registered by name."""

    name: ClassVar[str]
    FIELDS: ClassVar[tuple[Field, ...]]
    width: int  # bits of one element (a field of most formats, a constant of some)

    @classmethod
    def parse(cls, values: Mapping[str, object]) -> "NumberFormat":
        """The format from its fields' values (by suffix; absent ones take their defaults).
        A bad value is a ConfigError keyed by the field's suffix, for the caller to prefix;
        construction checks the values, so Python and TOML refuse alike.

        Args:
            values: field suffix -> value, e.g. `{"width": 8, "frac_width": 4}`; "NA" or
                None asks for the field's default.

        Returns:
            The format.

        Raises:
            ConfigError: a required field is absent, or a value breaks its field's rule.
        """
        given = {}
        for f in cls.FIELDS:
            given[f.suffix] = values.get(f.suffix, f.default)
            if given[f.suffix] is REQUIRED:
                raise ConfigError(f.suffix, "is required")
        return cls(**given)

    def __post_init__(self) -> None:
        """Check every field by its `Field` rule ("NA" and None ask for the default), then
        let the format fill in defaults and check its rules across fields (`_resolve`)."""
        for f in self.FIELDS:
            value = getattr(self, f.suffix)
            if not f.check("NA" if value is None else value):
                raise ConfigError(f.suffix, f"must be {f.rule}", value)
            if isinstance(value, str) and value == "NA":
                object.__setattr__(self, f.suffix, None)
        self._resolve()

    def _resolve(self) -> None:
        """Fill in defaults that depend on other fields; raise ConfigError for a combination
        of valid fields that is no format."""

    def values(self) -> dict[str, object]:
        """The fields as best.toml writes them (every default made explicit).

        Returns:
            Field suffix -> value, in the format's field order.
        """
        return {f.suffix: getattr(self, f.suffix) for f in self.FIELDS}

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        """The values of `x` in this format, with no gradient bookkeeping (`quantize` adds
        the straight-through gradient).

        Args:
            x: any floating tensor.

        Returns:
            A tensor of `x`'s shape, dtype and device holding the format's values.
        """
        raise NotImplementedError

    @property
    def bits(self) -> float:
        """Storage bits of one value, shared scales or exponents amortized over a full block."""
        return float(self.width)

    def bits_for(self, shape: Sequence[int]) -> float:
        """Storage bits per value of a tensor of `shape` (for an input, a batch: a batch of
        one sample): what a shared scale costs depends on how many values share it.

        Args:
            shape: the tensor's shape.

        Returns:
            The bits per value, shared scales or exponents included (`bits` for a format
            without them).
        """
        return self.bits

    def grid(self) -> tuple[int, int] | None:
        """Where the format's values lie. What a layer's exact sum needs follows from its
        operands' grids (`datapath.sum_dtype`).

        Returns:
            `(e, k)`: every value is an integer multiple of `2**e` of magnitude at most `k * 2**e`;
            None where values have no fixed grid (a scale computed from the data).
        """
        return None

    def signature(self) -> tuple:
        """What the simulated computation does, up to the values.

        Returns:
            A tuple equal for formats that run the same operations (so they take the same
            time; the `latency` metric is shared between them).
        """
        return (self.name,)

    def describe(self) -> str:
        """Compact text for tables.

        Returns:
            The format's name and fields, e.g. `integer(width=8, frac_width=4,
            rounding=half_even, overflow=saturate)`.
        """
        parts = [f"{k}={v}" for k, v in self.values().items()]
        return f"{self.name}({', '.join(parts)})"


FORMATS: Registry[type[NumberFormat]] = Registry("number format")
NO_FORMAT = "NA"  # `name = "NA"`: the layer stays float


def register_format(cls: type[NumberFormat]) -> type[NumberFormat]:
    """Class decorator: make `cls` available under `cls.name` in configs and spaces."""
    FORMATS.register(cls.name)(cls)
    return cls


def _round(scaled: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "half_even":
        return torch.round(scaled)
    low = torch.floor(scaled)
    if mode == "floor":
        return low
    # floor(x + 0.5) would round x + 0.5 itself for |x| >= 2**23 in float32; x - floor(x) is exact.
    return torch.where(scaled - low >= 0.5, low + 1, low)


@register_format
@dataclass(frozen=True)
class Integer(NumberFormat):
    """Signed fixed point: the values `k / 2**frac_width`, `k` a `width`-bit signed integer.

    `k` lies in `[-2**(width-1), 2**(width-1) - 1]`. `frac_width=None` (or MASE's "NA") means
    `width // 2` and is resolved at construction, so `Integer(8, None) == Integer(8, 4)`.
    `rounding` is `half_even` (MASE, torch.round), `half_up` (hls4ml AP_RND: ties
    towards +inf) or `floor` (hls4ml AP_TRN: towards -inf); `overflow` is `saturate` (clamp;
    MASE, hls4ml AP_SAT) or `wrap` (two's complement; hls4ml AP_WRAP). In hls4ml terms this
    is `ap_fixed<width, width - frac_width>`.

    Attributes:
        width: total bits, sign included (1..32).
        frac_width: fraction bits (-64..64; negative or above `width` is allowed: the step
            is `2**-frac_width`); None or "NA": `width // 2`.
        rounding: "half_even" (default), "half_up" or "floor".
        overflow: "saturate" (default) or "wrap".
    """

    name: ClassVar[str] = "integer"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        width_field(1, MAX_WIDTH),
        int_or_na("frac_width", -MAX_ABS_FRAC, MAX_ABS_FRAC),
        one_of("rounding", ROUNDINGS, "half_even", layer=True),
        one_of("overflow", OVERFLOWS, "saturate", layer=True),
    )

    width: int
    frac_width: int | None = None
    rounding: Rounding = "half_even"
    overflow: Overflow = "saturate"

    def _resolve(self) -> None:
        if self.frac_width is None:
            object.__setattr__(self, "frac_width", self.width // 2)

    @property
    def step(self) -> float:
        """The distance between neighbouring values, `2**-frac_width`."""
        return 2.0**-self.frac_width  # type: ignore[operator]

    @property
    def k_min(self) -> int:
        """The smallest integer code, `-2**(width-1)`."""
        return -(2 ** (self.width - 1))

    @property
    def k_max(self) -> int:
        """The largest integer code, `2**(width-1) - 1`."""
        return 2 ** (self.width - 1) - 1

    def grid(self) -> tuple[int, int]:
        """Where the format's values lie (see `NumberFormat.grid`).

        Returns:
            `(-frac_width, 2**(width-1))`: multiples of `step` of magnitude at most
            `2**(width-1)` steps.
        """
        return -self.frac_width, 2 ** (self.width - 1)  # type: ignore[operator]

    def signature(self) -> tuple:
        """What the simulated computation does, up to the values (see
        `NumberFormat.signature`).

        Returns:
            The name, rounding, overflow and whether float32 computes it exactly.
        """
        return (self.name, self.rounding, self.overflow, float32_exact(self))

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        """The values of `x` in this format, with no gradient bookkeeping. Formats wider than
        float's 24-bit mantissa cannot be represented exactly in float32; their results are
        the nearest float32 values inside the format's range.

        Args:
            x: any floating tensor.

        Returns:
            A tensor of `x`'s shape, dtype and device holding the format's values.
        """
        scale = 2.0**self.frac_width  # type: ignore[operator]
        if x.dtype == torch.float64 or float32_exact(self):
            # Multiplying and dividing by a power of two is exact in floating point.
            return self._overflow(_round(x * scale, self.rounding)) / scale
        q = (self._overflow(_round(x.double() * scale, self.rounding)) / scale).to(x.dtype)
        lo, hi = -_below(-self.k_min / scale, x.dtype), _below(self.k_max / scale, x.dtype)
        return torch.clamp(q, lo, hi)

    def _overflow(self, k: torch.Tensor) -> torch.Tensor:
        if self.overflow == "saturate":
            return torch.clamp(k, self.k_min, self.k_max)
        # fmod by a power of two is exact; the shifts below are exact by Sterbenz's lemma.
        span = 2.0**self.width
        r = torch.fmod(k, span)
        r = torch.where(r > self.k_max, r - span, r)
        return torch.where(r < self.k_min, r + span, r)


def float32_exact(fmt: Integer) -> bool:
    """Whether float32 arithmetic quantizes to `fmt` exactly. It does for the common formats;
    the exceptions are integers past 2**24, wrap-around of huge or infinite scaled values, and
    underflow of tiny inputs scaled by a negative frac width."""
    return fmt.width <= 24 and fmt.overflow == "saturate" and fmt.frac_width >= 0  # type: ignore[operator]


def _below(limit: float, dtype: torch.dtype) -> float:
    """The largest value of `dtype` that is <= `limit` (float32 rounds 2**31 - 1 up)."""
    value = torch.tensor(limit, dtype=torch.float64).to(dtype)
    if float(value) > limit:
        value = torch.nextafter(value, torch.zeros((), dtype=dtype))
    return float(value)


def quantize_values(x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """The values of `x` in `fmt`, with no gradient bookkeeping."""
    return fmt.quantize_values(x)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
        return fmt.quantize_values(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _ClippedStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
        lo, hi = saturation(fmt, x.dtype)
        ctx.save_for_backward((x >= lo) & (x <= hi))
        return fmt.quantize_values(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None


@functools.lru_cache(maxsize=1024)
def saturation(fmt: NumberFormat, dtype: torch.dtype) -> tuple[float, float]:
    """The smallest and largest values `fmt` saturates to; -inf, inf for a wrapping format
    and for block formats, whose shared scale follows the values."""
    if getattr(fmt, "overflow", "saturate") == "wrap":
        return -math.inf, math.inf
    q = fmt.quantize_values(torch.tensor([-1e30, 1e30], dtype=dtype))
    lo, hi = float(q[0]), float(q[1])
    return (
        (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and hi < 1e29 else (-math.inf, math.inf)
    )


def quantize(x: torch.Tensor, fmt: NumberFormat | None, clip_grad: bool = False) -> torch.Tensor:
    """Fake-quantize `x` to `fmt` (float values in the format); `fmt=None` returns `x`.

    The gradient is straight-through: the identity everywhere, including for values that
    were clipped (as MASE does), so training through a saturated weight still moves it back
    into range. With `clip_grad` it is zero where `x` lies beyond the values the format
    saturates to (PyTorch's `fake_quantize` and Brevitas do this for activations): a
    layer's inputs take it, since passing the gradient of a saturated activation on as if
    it were not saturated makes longer quantization-aware training worse.

    Args:
        x: any floating tensor.
        fmt: a number format (`Integer(8, 4)`, `MinifloatIEEE(8, 4)`, ...), or None.
        clip_grad: no gradient where `x` saturates.

    Returns:
        A tensor of `x`'s shape, dtype and device holding the format's values.
    """
    if fmt is None:
        return x
    if x.requires_grad:
        return (_ClippedStraightThrough if clip_grad else _StraightThrough).apply(x, fmt)
    return fmt.quantize_values(x)
