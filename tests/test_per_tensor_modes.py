"""Rounding and overflow per tensor (issue 22, item 3): `<tensor>_rounding` and
`<tensor>_overflow` override a layer's `rounding` and `overflow` for that tensor alone (a
wrapping accumulator between saturating inputs and outputs), are searchable like any field,
and reach the hardware types. Checked against a fixed-point reference written here."""

import numpy as np
import pytest
import torch
from torch import nn

import bitscout
from bitscout.errors import ConfigError
from bitscout.export.hardware import hardware
from bitscout.quant.apply import quantize_model
from bitscout.quant.tables import parse_layer_config

LAYER = {"name": "integer", "data_in_width": 6, "data_in_frac_width": 3, "weight_width": 4,
         "weight_frac_width": 3, "bias_width": 8, "bias_frac_width": 3}  # fmt: skip


def _fixed(x: np.ndarray, width: int, frac: int, rounding: str, overflow: str) -> np.ndarray:
    """Signed fixed point by its definition: k / 2**frac, k rounded then saturated or wrapped
    into width bits."""
    k = x.astype(np.float64) * 2.0**frac
    if rounding == "floor":
        k = np.floor(k)
    elif rounding == "half_up":
        k = np.floor(k + 0.5)
    else:
        k = np.round(k)  # numpy rounds half to even
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    k = np.clip(k, lo, hi) if overflow == "saturate" else (k - lo) % 2**width + lo
    return k / 2.0**frac


def test_a_tensors_own_mode_overrides_the_layers():
    q = parse_layer_config({**LAYER, "rounding": "half_up", "weight_rounding": "floor",
                            "accum_width": 10, "accum_overflow": "wrap"}, "k")  # fmt: skip
    assert q is not None and q.data_in is not None and q.weight is not None
    assert (q.data_in.rounding, q.data_in.overflow) == ("half_up", "saturate")
    assert (q.weight.rounding, q.weight.overflow) == ("floor", "saturate")
    assert q.bias is not None and q.bias.rounding == "half_up"
    assert q.accum is not None and (q.accum.rounding, q.accum.overflow) == ("half_up", "wrap")


@pytest.mark.parametrize(
    ("field", "value"),
    [("weight_rounding", "up"), ("accum_overflow", "clip"), ("data_in_overflow", 1)],
)
def test_a_bad_per_tensor_mode_names_its_own_key(field, value):
    with pytest.raises(ConfigError) as err:
        parse_layer_config({**LAYER, "accum_width": 10, field: value}, "seed.fc")
    assert err.value.key == f"seed.fc.{field}" and "must be one of" in str(err.value)


def test_a_per_tensor_mode_does_not_apply_to_a_format_without_it():
    with pytest.raises(ConfigError) as err:
        parse_layer_config({"name": "minifloat_ieee", "weight_width": 8,
                            "weight_exponent_width": 4, "weight_rounding": "floor"}, "k")  # fmt: skip
    assert err.value.key == "k.weight_rounding"


def test_the_quantized_layer_computes_each_tensors_own_mode():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    with torch.no_grad():
        layer.weight.mul_(3)  # some weights beyond 4 bits' range: saturation is exercised
    cfg = {**LAYER, "weight_rounding": "floor", "data_in_rounding": "half_up",
           "bias_overflow": "wrap"}  # fmt: skip
    model = quantize_model(nn.Sequential(layer), {"by": "name", "0": {"config": cfg}})
    x = torch.randn(40, 5) * 3
    got = model(x).detach().numpy().astype(np.float64)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    qx = _fixed(x.numpy(), 6, 3, "half_up", "saturate")
    qw = _fixed(w, 4, 3, "floor", "saturate")
    qb = _fixed(b, 8, 3, "half_even", "wrap")
    np.testing.assert_allclose(got, qx @ qw.T + qb, rtol=0, atol=1e-6)


def test_per_tensor_modes_are_searched_and_both_paths_agree():
    """A space over the accumulator's overflow and the weights' rounding: every candidate's
    fast-engine figures re-derived by the plain path (audit_rate 1), and the wrapping
    accumulator changes what is measured."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(300, 8) * 2, torch.randint(0, 3, (300,))
    layer = {k: [v] for k, v in LAYER.items()}
    layer.update(accum_width=[7], accum_overflow=["saturate", "wrap"],
                 weight_rounding=["floor", "half_even"])  # fmt: skip
    space = {"seed": {"default": {"config": layer}}}
    result = bitscout.search(model, (x, y), space, strategy="bruteforce", audit_rate=1.0)
    trials = result.trials
    assert len(trials) == 16
    assert {"0/accum_overflow", "2/weight_rounding"} <= set(trials.columns)
    audit = result.summary["audit"]
    assert audit["engine"] == "fast" and audit["rederived"] == audit["matched"] == 16
    by = trials.groupby("0/accum_overflow")["loss"].mean()
    assert by["wrap"] != by["saturate"]


def test_the_hardware_types_carry_each_tensors_mode():
    model = nn.Sequential(nn.Linear(4, 3))
    cfg = {**LAYER, "overflow": "saturate", "weight_rounding": "floor", "accum_width": 12,
           "accum_overflow": "wrap", "result_width": 8, "result_rounding": "half_up"}  # fmt: skip
    nodes = hardware(model, {"by": "name", "0": {"config": cfg}})
    layer = next(n for n in nodes if n.path == "0")
    assert (layer.params["weight"].rounding, layer.params["weight"].overflow) == (
        "floor",
        "saturate",
    )
    assert (layer.params["accum"].rounding, layer.params["accum"].overflow) == ("half_even", "wrap")
    assert "AP_WRAP" in layer.params["accum"].ap_fixed
    assert layer.result.rounding == "half_up" and "AP_RND," in layer.result.ap_fixed
