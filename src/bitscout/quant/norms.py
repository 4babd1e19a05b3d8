"""BatchNorm as fixed-point hardware computes it, in every quantized model.

hls4ml's BatchNormalization (`nnet_batchnorm.h`) computes `res = data * scale + bias` with
`scale = gamma / sqrt(var + eps)` and `bias = beta - mean * scale` stored in their own types,
the product and the sum exact, and one cast to the result type. bitscout gives every
BatchNorm of a quantized model the type that stands in for float in the export,
`ap_fixed<32,16,AP_RND_CONV,AP_SAT>`, for its input, scale, shift and result, and scores that
arithmetic: what is measured is what the exported hardware computes. In training mode
(quantization-aware training) a BatchNorm stays the float one, with batch statistics.
"""

import copy

import torch
from torch import nn

from bitscout.quant.formats import Integer

STAND_IN = Integer(32, 16, "half_even", "saturate")  # ap_fixed<32,16,AP_RND_CONV,AP_SAT>
FLOAT64_EXACT = 2**53
# In fixed_norm two 32-bit codes multiply to under 2**62 and the shifted shift code adds
# under 2**47, so the exact sum fits int64, where float64 (53 bits) could round it.


def folded(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel scale and shift of an eval-mode BatchNorm, in float64 from its
    float32 statistics: `x * scale + shift` is its output."""
    var = norm.running_var.double()  # type: ignore[union-attr]
    mean = norm.running_mean.double()  # type: ignore[union-attr]
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + norm.eps)
    return scale.detach(), (beta - mean * scale).detach()


def fixed_params(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The scale and shift as the hardware stores them: `folded` cast to the stand-in type."""
    scale, shift = folded(norm)
    return STAND_IN.quantize_values(scale), STAND_IN.quantize_values(shift)


def codes(x: torch.Tensor, fmt: Integer) -> torch.Tensor:
    """The int64 codes k of `x` cast to `fmt` (its values are k / 2**frac_width)."""
    scale = 2.0**fmt.frac_width  # type: ignore[operator]
    return (fmt.quantize_values(x.double()) * scale).round().to(torch.int64)


def half_even_shift(k: torch.Tensor, bits: int) -> torch.Tensor:
    """k / 2**bits (bits > 0) rounded to the nearest integer, ties to even: the stand-in's
    rounding of an exact sum with `bits` more fractional bits."""
    low = torch.bitwise_right_shift(k, bits)  # floor, also for negative k
    rest, half = k - low * 2**bits, 2 ** (bits - 1)
    up = (rest > half) | ((rest == half) & (torch.bitwise_and(low, 1) == 1))
    return low + up.to(torch.int64)


def fixed_norm(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channel_dim: int = 1
) -> torch.Tensor:
    """hls4ml's BatchNormalization of `x` with stand-in types: `x` cast to the input type,
    times the stored `scale` plus the stored `shift` (both cast to the stand-in), the product
    and sum exact, cast once to the result type; returned in x's dtype."""
    return _from_codes(x, codes(scale, STAND_IN), codes(shift, STAND_IN), channel_dim)


def _from_codes(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channel_dim: int = 1
) -> torch.Tensor:
    """`fixed_norm` with the scale and shift given as their stand-in codes (int64)."""
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    ks, kb = scale.view(shape), shift.view(shape)
    f, lo, hi = STAND_IN.frac_width, STAND_IN.k_min, STAND_IN.k_max
    kx = x.double().mul_(2.0**f).round_().clamp_(lo, hi)  # type: ignore[operator]
    if not _float64_exact(kx, ks, kb):
        total = kx.to(torch.int64) * ks + kb * 2**f  # type: ignore[operator]
        k = half_even_shift(total, f).clamp_(lo, hi)  # type: ignore[arg-type]
        return (k.double() * STAND_IN.step).to(x.dtype)
    # Any input code times the scale code plus the shift stays under 2**53 steps of 2**-2f:
    # float64 holds the sum exactly, in steps of 2**-f too, so torch.round rounds it once
    # (ties to even, as the stand-in does).
    k = kx.mul_(ks.double() * STAND_IN.step).add_(kb.double()).round_().clamp_(lo, hi)
    return k.mul_(STAND_IN.step).to(x.dtype)


def _float64_exact(kx: torch.Tensor, ks: torch.Tensor, kb: torch.Tensor) -> bool:
    """Whether every |kx * ks + kb * 2**f| stays within 2**53: for any input code when the
    scale codes are small (the usual case, no pass over the data), else for these ones."""
    shifted = int(kb.abs().max()) * 2**STAND_IN.frac_width  # type: ignore[operator]
    scale = int(ks.abs().max())
    if -STAND_IN.k_min * scale + shifted <= FLOAT64_EXACT:
        return True
    largest = int(kx.abs().max()) if kx.numel() else 0
    return largest * scale + shifted <= FLOAT64_EXACT


def stored_codes(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-in codes (int64) of the scale and shift the hardware stores."""
    scale, shift = folded(norm)
    return codes(scale, STAND_IN), codes(shift, STAND_IN)


class _Fixed(nn.modules.batchnorm._BatchNorm):
    """In eval mode the exported hardware's arithmetic (`fixed_norm`); in training mode the
    float BatchNorm, so quantization-aware training learns its statistics as usual."""

    # The codes of a twin that never trains (`fixed_twin`), folded once; else every call
    # folds the parameters, which quantization-aware training may have moved.
    frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return _from_codes(x, *(self.frozen or stored_codes(self)))


class FixedBatchNorm1d(_Fixed, nn.BatchNorm1d):
    pass


class FixedBatchNorm2d(_Fixed, nn.BatchNorm2d):
    pass


_FIXED: dict[type[nn.Module], type[_Fixed]] = {
    nn.BatchNorm1d: FixedBatchNorm1d, nn.BatchNorm2d: FixedBatchNorm2d,
}  # fmt: skip


def fix_norms(model: nn.Module) -> nn.Module:
    """`model` with each BatchNorm1d/2d (exactly those types) turned, in place, into its
    fixed-point twin: same parameters and buffers, same state_dict keys; returns `model`."""
    for module in model.modules():
        fixed = _FIXED.get(type(module))
        if fixed is not None:
            module.__class__ = fixed
    return model


def fixed_twin(module: nn.Module) -> nn.Module:
    """A BatchNorm1d/2d's fixed-point twin for inference only, its stored codes folded once (a
    copy: `module` is untouched); any other module as it is."""
    if type(module) not in _FIXED:
        return module
    twin = fix_norms(copy.deepcopy(module))
    assert isinstance(twin, _Fixed)  # for the type checker: fix_norms just set its class
    twin.frozen = stored_codes(twin)
    return twin


def stored_form(norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Rewrite `norm`, in place, so that its own folding gives the stored scale and shift
    exactly: weight and bias the stored values, mean 0, variance 1, eps 0. A converter that
    folds it (hls4ml: `gamma / sqrt(var + eps)`, `beta - mean * scale`, in float32) then
    writes the values bitscout scores, which lie on the stand-in grid and print exactly."""
    scale, shift = fixed_params(norm)
    with torch.no_grad():
        norm.weight = nn.Parameter(scale.to(norm.running_mean.dtype))  # type: ignore[union-attr]
        norm.bias = nn.Parameter(shift.to(norm.running_mean.dtype))  # type: ignore[union-attr]
        norm.running_mean.zero_()  # type: ignore[union-attr]
        norm.running_var.fill_(1.0)  # type: ignore[union-attr]
    norm.eps = 0.0
