"""Issue 20 item 7: a quantized layer's sum is exact whatever the widths, in the plain path
and in the fast engine. The reference is written here in Python integers: each tensor's
fixed-point codes, each output the exact rational sum, rounded once to the activations'
float32 (as the hardware's exact accumulator, read back into the model's dtype)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from bitscout.evaluate.engine.candidates import Resolver
from bitscout.evaluate.engine.chain import trace_chain
from bitscout.evaluate.engine.runner import Runner
from bitscout.quant import quantize_model
from bitscout.quant.blocks import MXInt
from bitscout.quant.datapath import sum_dtype
from bitscout.quant.floats import Log, MinifloatIEEE
from bitscout.quant.formats import Integer
from bitscout.quant.space import SearchSpace


def _code(v: Fraction, width: int, frac: int) -> int:
    """v's code in a saturating, round-half-even signed fixed-point type."""
    k = round(v * 2**frac)  # Fraction rounds half to even
    return max(-(2 ** (width - 1)), min(2 ** (width - 1) - 1, k))


def _f32(v: Fraction) -> Fraction:
    """v rounded to float32 once (float(v) is exact here: every sum has under 53 bits)."""
    f = float(v)
    assert Fraction(f) == v
    return Fraction(float(np.float32(f)))


def _ref_linear(
    rows: list[list[Fraction]], layer: nn.Linear, w: int, ww: int
) -> list[list[Fraction]]:
    """`layer` with `w`-bit inputs and bias and `ww`-bit weights (frac width // 2), its sums
    exact, each rounded once to float32."""
    fx, fw = w // 2, ww // 2
    weight = [[_code(Fraction(float(v)), ww, fw) for v in r] for r in layer.weight.tolist()]
    bias = [_code(Fraction(float(v)), w, fx) for v in layer.bias.tolist()]
    out = []
    for row in rows:
        x = [_code(v, w, fx) for v in row]
        sums = [sum(a * b for a, b in zip(x, wr, strict=True)) * 2**fx + c * 2 ** (fx + fw)
                for wr, c in zip(weight, bias, strict=True)]  # fmt: skip
        out.append([_f32(Fraction(s, 2 ** (2 * fx + fw))) for s in sums])
    return out


def _reference(model: nn.Sequential, x: torch.Tensor, w: int, weights: list[int]) -> torch.Tensor:
    """The model with `w`-bit inputs and biases and the layers' weight widths `weights`."""
    rows = [[Fraction(float(v)) for v in r] for r in x.tolist()]
    rows = _ref_linear(rows, model[0], w, weights[0])
    rows = [[max(v, Fraction(0)) for v in r] for r in rows]  # ReLU
    rows = _ref_linear(rows, model[2], w, weights[1])
    return torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float32)


def _model_and_data() -> tuple[nn.Sequential, torch.Tensor]:
    """digits' shape (64 -> 32 -> 10); inputs and weights use most of a 16-bit type's range,
    so the second layer's sums (up to 2e4 in steps of 2**-16) need 32 bits."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        model[0].weight.mul_(4)
        model[2].weight.mul_(200)
    return model, torch.randn(80, 64) * 40


def _plan(width: int) -> dict:
    table = {"name": "integer", "data_in_width": width, "weight_width": width}
    return {"by": "type", "linear": {"config": {**table, "bias_width": width}}}


def test_the_plain_path_is_exact_at_16_bits():
    model, x = _model_and_data()
    want = _reference(model, x, 16, [16, 16])
    with torch.inference_mode():
        got = quantize_model(model, _plan(16))(x)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)  # float32 sums were off on most rows


def test_the_plain_path_keeps_float32_where_it_is_exact():
    model, x = _model_and_data()
    with torch.inference_mode():
        got = quantize_model(model, _plan(8))(x)
    assert torch.equal(got, _reference(model, x, 8, [8, 8]))


def test_the_fast_engine_is_exact_at_16_bits():
    """Candidates stacked at one layer mix 8- and 16-bit weights; each column is exact."""
    model, x = _model_and_data()
    tables = {"default": {"name": ["NA"]}, "linear": {"name": ["integer"], "data_in_width": [16], "weight_width": [8, 16],
                         "bias_width": [16]}}  # fmt: skip
    space = SearchSpace(model, "type", tables)
    resolver = Resolver(space)
    runner = Runner(trace_chain(model), x, fixed=resolver.fixed, block_bytes=2**16)
    configs = [space.config(i) for i in range(space.size)]
    candidates = [runner.candidate(k, resolver.plan(k)) for k in map(resolver.key, configs)]
    with torch.inference_mode():
        for stage, members in runner.groups(candidates):
            logits = torch.cat(list(runner.logits(stage, [candidates[i] for i in members])))
            for column, i in enumerate(members):
                want = _reference(model, x, 16, _weight_widths(space, configs[i]))
                assert torch.equal(logits[:, column], want), configs[i]


def _weight_widths(space: SearchSpace, config: dict) -> list[int]:
    plan = space.resolved(config)
    return [plan[p].weight.width for p in ("0", "2")]  # type: ignore[union-attr]


def test_a_convolution_is_exact_at_16_bits():
    """The reference is float64 on the quantized values: exact, its sums need under 53 bits."""
    torch.manual_seed(1)
    conv = nn.Conv1d(4, 3, 5).eval()
    with torch.no_grad():
        conv.weight.mul_(300)
    x = torch.randn(20, 4, 30) * 40
    q = quantize_model(nn.Sequential(conv), _plan(16) | {"conv1d": _plan(16)["linear"]})
    fmt = Integer(16)
    codes = [fmt.quantize_values(t.detach().double()) for t in (x, conv.weight, conv.bias)]
    want = torch.nn.functional.conv1d(*codes).float()
    with torch.inference_mode():
        assert torch.equal(q(x), want)


@pytest.mark.parametrize(
    ("data_in", "weight", "fan", "dtype"),
    [
        (Integer(8), Integer(8), 64, None),  # 64 * 2**14 steps: float32 is exact, and fast
        (Integer(8), Integer(8), 2**10, None),  # 2**24 steps at most: float32's last integer
        (Integer(8), Integer(8), 2**10 + 1, torch.float64),
        (Integer(16), Integer(16), 64, torch.float64),
        (MinifloatIEEE(4, 2), MinifloatIEEE(4, 2), 784, None),  # 12 * 12 steps of 2**-2 each
        (MinifloatIEEE(8, 4), Integer(8), 64, torch.float64),  # binades 2**-9 .. 2**8
        (Log(8), Log(8), 8, torch.float64),  # 2**-126 .. 2**128: beyond float32's range
        (MXInt(), Integer(8), 8, torch.float64),  # a scale from the data: no fixed grid
        (None, Integer(16), 64, None),  # a float operand: the layer stays float
    ],
)
def test_the_sum_dtype_follows_the_operands_grids(data_in, weight, fan, dtype):
    assert sum_dtype(data_in, weight, None, fan) == dtype
