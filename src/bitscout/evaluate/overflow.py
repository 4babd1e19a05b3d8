"""Overflow: the values a candidate's formats saturate or wrap, counted per tensor.

A value overflows a fixed-point (`integer`) format when its rounded code lies outside the
format's codes, exactly where saturation clamps it or wrap-around moves it (a value within
half a step beyond the largest one rounds to it and does not overflow). Minifloat and log
formats overflow beyond the values they saturate to (`formats.saturation`); binary, ternary
and block formats never do (their scale follows the values, or every value is a sign).

Per quantized layer the tensors are its input (`data_in`, every value of every row), its
weight and bias (each value once: they do not depend on the rows), its accumulator (an
output of a row whose sum saturated or wrapped at any cast: a product, the bias or a partial
sum) and its result (an output of a row beyond the result type). The fast engine and the
plain path (`Probe`, forward pre-hooks on the quantized model) count with the same functions.
"""

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bitscout.quant.datapath import accumulate
from bitscout.quant.formats import Integer, NumberFormat, quantize_values, saturation
from bitscout.quant.layers import LayerQuant

# (layer path, tensor) -> (values that overflowed, values counted)
Tally = dict[tuple[str, str], tuple[int, int]]
_SIGNS = ("binary", "ternary")  # every value becomes a sign times a scale: nothing overflows


def rate(tally: Mapping[tuple[str, str], tuple[int, int]]) -> float:
    """The largest share of overflowed values of any tensor in `tally` (0.0 when empty)."""
    return max((over / n for over, n in tally.values() if n), default=0.0)


def worst(tally: Mapping[tuple[str, str], tuple[int, int]]) -> tuple[str, str] | None:
    """The (layer, tensor) of the largest rate, the first of equals; None when none overflows."""
    found = [(over / n, key) for key, (over, n) in tally.items() if n and over]
    return max(found, key=lambda f: f[0])[1] if found else None


def merged(a: Tally, b: Tally) -> Tally:
    """Both tallies summed tensor by tensor."""
    out = dict(a)
    for key, (over, n) in b.items():
        o, m = out.get(key, (0, 0))
        out[key] = (o + over, m + n)
    return out


def out_of_range(x: torch.Tensor, fmt: NumberFormat | None) -> torch.Tensor | None:
    """Where `x` overflows `fmt` (bool, x's shape; NaN never does), or None where nothing can."""
    inside = _inside(fmt, x.dtype)
    if inside is None:
        return None
    lo, hi, dtype = inside
    x = x.to(dtype)
    return (x < lo) | (x > hi)


def count(x: torch.Tensor, fmt: NumberFormat | None, g: int = 1) -> np.ndarray:
    """Overflowed values of `x` in `fmt` (`out_of_range`), for g candidates whose rows are
    interleaved (row `n * g + i` is sample n of candidate i): g counts."""
    inside = _inside(fmt, x.dtype)
    if inside is None or not x.numel():
        return np.zeros(g, np.int64)
    lo, hi, dtype = inside
    x = x.to(dtype)
    least, most = torch.aminmax(x)
    if least >= lo and most <= hi:  # the common case, in one pass: nothing overflows
        return np.zeros(g, np.int64)
    if least.isnan() or most.isnan():
        mask = (x < lo) | (x > hi)
        return mask.reshape(len(x) // g, g, -1).sum(dim=(0, 2)).cpu().numpy()
    # Float arithmetic instead of a bool mask: CPU comparisons into bool tensors cost about
    # three times as much. 1 where x lies outside [lo, hi], 0 inside.
    beyond = (x - x.clamp(lo, hi)).sign_().abs_()
    summed = beyond.reshape(len(x) // g, g, -1).sum(dim=(0, 2), dtype=torch.float64)
    return summed.cpu().numpy().astype(np.int64)


@functools.lru_cache(maxsize=1024)
def _inside(
    fmt: NumberFormat | None, dtype: torch.dtype
) -> tuple[float, float, torch.dtype] | None:
    """The values that do not overflow `fmt`, [lo, hi] inclusive, and the dtype that compares
    them exactly (x's, or float64 where x's cannot hold the ends); None where none overflows."""
    if fmt is None or fmt.name in _SIGNS:
        return None
    if not isinstance(fmt, Integer):
        lo, hi = _bounds(fmt, dtype)
        return None if lo == -math.inf and hi == math.inf else (lo, hi, dtype)
    up, down = _thresholds(fmt)
    if not (_exact(up, dtype) and _exact(down, dtype)):
        dtype = torch.float64
    # A value at a threshold is a tie, which half_even rounds to the even code: k_max + 1 is
    # even from 2 bits on (it overflows), k_min - 1 only at 1 bit; floor's down is a code.
    if fmt.rounding == "half_even" and fmt.width == 1:
        return _after(down, dtype, math.inf), up, dtype
    return down, _after(up, dtype, -math.inf), dtype


def _thresholds(fmt: Integer) -> tuple[float, float]:
    """The scaled midpoints beyond the end codes (floor: the next code and k_min), where the
    rounded code leaves [k_min, k_max]."""
    step = fmt.step
    if fmt.rounding == "floor":
        return (fmt.k_max + 1) * step, fmt.k_min * step
    return (fmt.k_max + 0.5) * step, (fmt.k_min - 0.5) * step


def _exact(value: float, dtype: torch.dtype) -> bool:
    return float(torch.tensor(value, dtype=dtype)) == value


def _after(value: float, dtype: torch.dtype, towards: float) -> float:
    """The next value of `dtype` from `value` towards `towards`."""
    return float(torch.nextafter(torch.tensor(value, dtype=dtype),
                                 torch.tensor(towards, dtype=dtype)))  # fmt: skip


def _bounds(fmt: NumberFormat, dtype: torch.dtype) -> tuple[float, float]:
    """The range of `fmt`: a wrapping format's is its saturating twin's."""
    if getattr(fmt, "overflow", "saturate") == "wrap":
        fmt = replace(cast(Any, fmt), overflow="saturate")
    return saturation(fmt, dtype)


def per_value(x: torch.Tensor, g: int = 1) -> int:
    """Values of one candidate's rows in `x` (rows of g interleaved candidates)."""
    return x.numel() // g


def pre_result(
    layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    quant: LayerQuant,
) -> torch.Tensor:  # fmt: skip
    """The layer's output before its result type, in float64 (exact: the operands sit on
    fixed grids), through its accumulator for a Linear layer."""
    b = None if bias is None else bias.double()
    if isinstance(layer, nn.Linear):
        if quant.accum is not None:
            return accumulate(x, weight, b, quant.accum)
        return F.linear(x.double(), weight.double(), b)
    return layer._conv_forward(x.double(), weight.double(), b)  # type: ignore[operator]


def accum_overflow(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, accum: Integer
) -> torch.Tensor:
    """Per output of each row of a Linear layer, whether any cast of its sum to `accum`
    overflowed: a product, the bias, or a partial sum of the cast ones (exact up to the
    first overflow, which is all that decides)."""
    raw = x.double()[..., None, :] * weight.double()
    over = out_of_range(raw, accum)
    assert over is not None  # an Integer always has a range
    hit = over.any(-1)
    partial = quantize_values(raw, accum).cumsum(-1)
    if bias is not None:
        b = bias.double()
        b_over = out_of_range(b, accum)
        hit = hit | (False if b_over is None else b_over)
        partial = partial + quantize_values(b, accum)[:, None]
    partial_over = out_of_range(partial, accum)
    return hit if partial_over is None else hit | partial_over.any(-1)


def datapath_tally(
    layer: nn.Module, x: torch.Tensor, weight: torch.Tensor,
    bias: torch.Tensor | None, quant: LayerQuant, g: int = 1,
) -> dict[str, tuple[np.ndarray, int]]:  # fmt: skip
    """The accumulator's and the result's overflow counts of a layer on its quantized input
    x (rows of g interleaved candidates), as `count` gives them, with values per candidate."""
    found: dict[str, tuple[np.ndarray, int]] = {}
    if isinstance(layer, nn.Linear) and quant.accum is not None:
        hit = accum_overflow(x, weight, bias, quant.accum)
        found["accum"] = (hit.reshape(len(x) // g, g, -1).sum(dim=(0, 2)).numpy(),
                          per_value(hit, g))  # fmt: skip
    if quant.result is not None:
        out = pre_result(layer, x, weight, bias, quant)
        found["result"] = (count(out, quant.result, g), per_value(out, g))
    return found


def param_tally(path: str, quant: LayerQuant, weight: torch.Tensor,
                bias: torch.Tensor | None) -> Tally:  # fmt: skip
    """The weight's and bias's overflow counts (raw float values), each value once."""
    tally: Tally = {}
    for name, value in (("weight", weight), ("bias", bias)):
        fmt = getattr(quant, name)
        if value is not None and fmt is not None:
            tally[(path, name)] = (int(count(value.detach().reshape(1, -1), fmt)[0]),
                                   value.numel())  # fmt: skip
    return tally


class Probe:
    """Counts a quantized model's overflow while it runs (the plain path): forward pre-hooks
    on its quantized layers, removed on leaving `attached`."""

    def __init__(self) -> None:
        self.tally: Tally = {}

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator["Probe"]:
        handles = []
        for path, module in model.named_modules():
            quant = getattr(module, "quant", None)
            if isinstance(quant, LayerQuant):
                weight, bias = weight_bias(module)
                self.tally = merged(self.tally, param_tally(path, quant, weight, bias))
                handles.append(module.register_forward_pre_hook(self._hook(path, quant)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, path: str, quant: LayerQuant) -> Callable[[nn.Module, tuple], None]:
        def hook(module: nn.Module, args: tuple) -> None:
            self.add(path, module, args[0], quant)

        return hook

    def add(self, path: str, layer: nn.Module, x: torch.Tensor, quant: LayerQuant) -> None:
        """Count a call of `layer` on the raw input x."""
        x = x.detach()
        part: Tally = {}
        if quant.data_in is not None:
            part[(path, "data_in")] = (int(count(x, quant.data_in)[0]), x.numel())
        if quant.accum is not None or quant.result is not None:
            weight, bias = weight_bias(layer)
            weight = _q(weight.detach(), quant.weight)
            bias = None if bias is None else _q(bias.detach(), quant.bias)
            xq = _q(x, quant.data_in)
            for name, (over, n) in datapath_tally(layer, xq, weight, bias, quant).items():
                part[(path, name)] = (int(over[0]), n)
        self.tally = merged(self.tally, part)


def weight_bias(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A Linear-like layer's weight and bias (None when it has none)."""
    weight, bias = layer.weight, getattr(layer, "bias", None)
    assert isinstance(weight, torch.Tensor) and (bias is None or isinstance(bias, torch.Tensor))
    return weight, bias


def _q(x: torch.Tensor, fmt: NumberFormat | None) -> torch.Tensor:
    return x if fmt is None else quantize_values(x, fmt)


class Counts:
    """Overflow counts of g candidates at once, tensor by tensor, added block by block."""

    def __init__(self, g: int) -> None:
        self.g = g
        self._found: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def add(self, key: tuple[str, str], over: np.ndarray, n: int, at: int | None = None) -> None:
        """Add `over` (g counts, or one for candidate `at`) of `n` values per candidate."""
        if key not in self._found:
            self._found[key] = (np.zeros(self.g, np.int64), np.zeros(self.g, np.int64))
        counted, values = self._found[key]
        where = slice(None) if at is None else slice(at, at + 1)
        counted[where] += over
        values[where] += n

    def of(self, i: int) -> Tally:
        """Candidate i's tally."""
        return {k: (int(c[i]), int(n[i])) for k, (c, n) in self._found.items()}
