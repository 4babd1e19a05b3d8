"""BatchNorm in a quantized model computes as hls4ml's BatchNormalization with the stand-in
type ap_fixed<32,16,AP_RND_CONV,AP_SAT> for its input, scale, shift and result. Checked
against a reference in exact rational arithmetic written here, on random values, ties and
saturation; the fast engine and the exports are checked against the plain path elsewhere
(tests/test_fastpath.py, tests/test_export.py, tests/test_qonnx.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from bitscout.quant import quantize_model
from bitscout.quant.norms import FixedBatchNorm1d, fixed_norm, fixed_twin, folded, stored_form
from bitscout.zoo.models import build_model

FRAC, LO, HI = 16, -(2**31), 2**31 - 1


def _code(value: Fraction) -> int:
    """round-half-even(value * 2**16), saturated to 32 bits: the stand-in cast."""
    return _rounded(value * 2**FRAC)


def _rounded(scaled: Fraction) -> int:
    low = math.floor(scaled)
    rest = scaled - low
    k = low + (rest > Fraction(1, 2) or (rest == Fraction(1, 2) and low % 2 == 1))
    return min(max(k, LO), HI)


def _reference(x: float, scale: float, shift: float) -> float:
    total = _code(Fraction(x)) * _code(Fraction(scale)) + _code(Fraction(shift)) * 2**FRAC
    return float(np.float32(_rounded(Fraction(total, 2**FRAC)) / 2**FRAC))


def _check(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
    got = fixed_norm(x, scale, shift)
    c = x.shape[1]
    for idx in np.ndindex(*x.shape):
        ch = idx[1] % c
        want = _reference(float(x[idx]), float(scale[ch]), float(shift[ch]))
        assert float(got[idx]) == want, (idx, float(x[idx]), float(scale[ch]))


def test_random_values_equal_exact_arithmetic():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=gen) * 3
    scale = torch.randn(6, generator=gen, dtype=torch.float64) * 2
    shift = torch.randn(6, generator=gen, dtype=torch.float64)
    _check(x, scale, shift)


def test_ties_round_to_even_and_products_are_exact():
    step = 2.0**-FRAC
    # x * 0.5 lands exactly halfway between two codes: odd codes round to the even neighbour
    x = torch.tensor([[k * step] for k in (1, 3, 5, -1, -3, 7)], dtype=torch.float32)
    _check(x, torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    got = fixed_norm(
        x, torch.tensor([0.5], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    )
    assert [round(float(v) / step) for v in got[:, 0]] == [0, 2, 2, 0, -2, 4]
    # a product needing 40 bits, which float32 would round before the cast
    x = torch.tensor([[1.0 + 3 * step]])
    _check(
        x,
        torch.tensor([1.0 + 5 * step], dtype=torch.float64),
        torch.tensor([step / 2], dtype=torch.float64),
    )


def test_input_and_result_saturate():
    x = torch.tensor([[40000.0, -40000.0], [30000.0, -30000.0]])
    _check(
        x,
        torch.tensor([1.0, 2.0], dtype=torch.float64),
        torch.tensor([0.25, -0.25], dtype=torch.float64),
    )
    got = fixed_norm(
        x, torch.tensor([1.0, 2.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    )
    assert float(got[0, 0]) == float(np.float32(HI / 2**FRAC)) and float(got[1, 1]) == -32768.0


def test_products_beyond_float64_are_exact_too():
    """Codes whose products pass 2**53 take the int64 path: the sum still exact."""
    step = 2.0**-FRAC
    x = torch.tensor([[30000.0 + 0.5, 12345.0 + 3 * 2**-10], [-20000.0 - 0.25, 7.0]])
    scale = torch.tensor([1000.0 + 7 * step, -511.0 - 3 * step], dtype=torch.float64)
    shift = torch.tensor([5 * step, -0.5], dtype=torch.float64)
    _check(x, scale, shift)  # the first column saturates, the second needs 60 bits


def test_batchnorm2d_scales_per_channel():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2, 2, generator=gen)
    scale = torch.tensor([0.5, -1.25, 3.0], dtype=torch.float64)
    shift = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    _check(x, scale, shift)


def _model() -> nn.Module:
    torch.manual_seed(4)
    model = build_model("jsc-toy")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            with torch.no_grad():
                m.running_mean.normal_()
                m.running_var.uniform_(0.3, 3.0)
                m.weight.normal_()
                m.bias.normal_()
    return model.eval()


def test_quantized_model_norms_are_fixed_in_eval_and_float_in_training():
    model = _model()
    q = quantize_model(model, {"by": "type", "default": {"config": {"name": "NA"}}})
    norms = [m for m in q.modules() if isinstance(m, nn.BatchNorm1d)]
    assert norms and all(type(m) is FixedBatchNorm1d for m in norms)
    assert all(type(m) is nn.BatchNorm1d for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    assert q.state_dict().keys() == model.state_dict().keys()  # a checkpoint loads either way
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(5))
    norm, twin = model.seq_blocks[0], q.seq_blocks[0]
    scale, shift = folded(norm)
    want = torch.tensor([[_reference(float(x[i, c]), float(scale[c]), float(shift[c]))
                          for c in range(16)] for i in range(50)])  # fmt: skip
    assert torch.equal(twin(x), want)
    assert (twin(x) - norm(x)).abs().max() < 2e-4  # the float BatchNorm, to the stand-in's step
    twin.train()
    reference = nn.BatchNorm1d(16).train()
    reference.load_state_dict(norm.state_dict())
    assert torch.equal(twin(x), reference(x))  # batch statistics, as quantization-aware training


def test_stored_form_folds_to_the_same_stored_values():
    norm = _model().seq_blocks[0]
    twin = fixed_twin(norm)
    stored = fixed_twin(norm)
    stored_form(stored)
    x = torch.randn(30, 16) * 4
    assert torch.equal(twin(x), stored(x)) and stored.eps == 0.0
    # what a converter computes from the stored form (hls4ml: float32 numpy) is on the grid
    scale = stored.weight.detach().numpy() / np.sqrt(stored.running_var.numpy() + stored.eps)
    assert np.array_equal(scale * 2**FRAC, np.round(scale * 2**FRAC))
    assert norm.eps == 1e-5  # the original is untouched


@pytest.mark.parametrize("kind", ["none", "no_affine"])
def test_norm_without_affine_parameters(kind):
    norm = nn.BatchNorm1d(4, affine=kind == "none").eval()
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 2.0]))
    x = torch.randn(8, 4)
    scale, shift = folded(norm)
    assert torch.allclose(scale, 1 / torch.sqrt(norm.running_var.double() + 1e-5))
    got = fixed_twin(norm)(x)
    for i in range(8):
        for c in range(4):
            assert float(got[i, c]) == _reference(float(x[i, c]), float(scale[c]), float(shift[c]))
