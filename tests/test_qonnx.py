"""QONNX export: model.onnx executed by QONNX's own executor equals bitscout's quantized model
bit for bit, each node's numerics equal a reference written here, and every format QONNX
cannot express is refused in one line naming the layer and the format."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("qonnx")
onnx = pytest.importorskip("onnx")

from bitscout.errors import ConfigError  # noqa: E402
from bitscout.export.qonnx import (  # noqa: E402
    DOMAIN,
    MAX_FLOAT_MANTISSA,
    load_qonnx,
    run_qonnx,
    verify_qonnx,
    write_qonnx,
)
from bitscout.export.run import Subject  # noqa: E402
from bitscout.quant.floats import MinifloatIEEE  # noqa: E402
from bitscout.zoo.models import build_model  # noqa: E402


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def rows(n: int = 300, width: int = 6, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(1)) * scale


def plan(**config: object) -> dict:
    return {"by": "type", "default": {"config": dict(config)}}


def integer(w: tuple, b: tuple | None = None, x: tuple | None = None, **extra: object) -> dict:
    x, b = x or w, b or w
    return plan(name="integer", data_in_width=x[0], data_in_frac_width=x[1], weight_width=w[0],
                weight_frac_width=w[1], bias_width=b[0], bias_frac_width=b[1], **extra)  # fmt: skip


def exported(tmp_path: Path, model: nn.Module, p: dict, x: torch.Tensor) -> tuple[Subject, Path]:
    subject = Subject(model, p, x, "test")
    path = write_qonnx(subject, tmp_path)
    return subject, path


def nodes(path: Path) -> list:
    return [n for n in onnx.load(str(path)).graph.node if n.domain == DOMAIN]


def attrs(node: object) -> dict:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}  # type: ignore[attr-defined]
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


# --- references, independent of bitscout's formats ---------------------------------------


def ref_fixed(v: np.ndarray, width: int, frac: int, rounding: str = "half_even") -> np.ndarray:
    k = v.astype(np.float64) * 2.0**frac
    k = np.round(k) if rounding == "half_even" else np.floor(k)
    return np.clip(k, -(2 ** (width - 1)), 2 ** (width - 1) - 1) / 2.0**frac


def ref_minifloat(v: np.ndarray, width: int, exp: int) -> np.ndarray:
    """Every value of the IEEE-style minifloat without infinities, listed by its codes; an
    input takes the nearest (ties: the even code), beyond the largest it saturates."""
    man, bias = width - 1 - exp, 2 ** (exp - 1) - 1
    values = []
    for e, m in itertools.product(range(2**exp), range(2**man)):
        lead, power = (0, 1 - bias) if e == 0 else (1, e - bias)
        values.append(((lead + m / 2**man) * 2.0**power, m))
    grid = np.array([g for g, _ in values])
    even = np.array([m % 2 == 0 for _, m in values])
    a = np.abs(v.astype(np.float64))[:, None]
    dist = np.abs(a - grid[None])
    best = dist.min(1, keepdims=True)
    pick = np.where(dist == best, np.where(even, 2, 1), 0).argmax(1)
    return np.sign(v) * grid[pick]


def ref_linear(x: np.ndarray, model: nn.Sequential, q: object) -> np.ndarray:
    """The tiny model with each layer's input, weight and bias through `q`, in float64."""
    h = x.astype(np.float64)
    for module in model:
        if isinstance(module, nn.ReLU):
            h = np.maximum(h, 0)
            continue
        w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
        h = q(h) @ q(w).T + q(b)  # type: ignore[operator]
    return h


# --- each supported format's node against QONNX's executor -------------------------------


@pytest.mark.parametrize(
    ("width", "frac", "rounding"),
    [
        (8, 4, "half_even"),
        (6, 3, "floor"),
        (4, -1, "half_even"),
        (12, 10, "floor"),
        (2, 0, "floor"),
    ],
)
def test_integer_is_quant_and_bit_exact(tmp_path, width, frac, rounding):
    model, x = tiny(), rows()
    subject, path = exported(tmp_path, model, integer((width, frac), rounding=rounding), x)
    quants = nodes(path)
    assert [n.op_type for n in quants] == ["Quant"] * 6  # input, weight, bias of two layers
    assert {attrs(n)["rounding_mode"] for n in quants} == {
        "ROUND" if rounding == "half_even" else "FLOOR"
    }
    assert {(attrs(n)["signed"], attrs(n)["narrow"]) for n in quants} == {(1, 0)}
    got = run_qonnx(path, x)
    want = ref_linear(x.numpy(), model, lambda v: ref_fixed(v, width, frac, rounding))
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float32))
    found = verify_qonnx(subject, tmp_path, 300)
    assert found["differing_values"] == 0 and found["max_logit_difference"] == 0.0
    assert found["top_class_agreement"] == 1.0 and found["rows"] == 300


def test_quant_scale_zero_point_and_width_are_the_formats(tmp_path):
    _, path = exported(tmp_path, tiny(), integer((8, 5), b=(10, 7), x=(7, 3)), rows())
    model = load_qonnx(path)
    seen = []
    for node in model.graph.node:
        if node.op_type == "Quant":
            scale, zero, bits = (float(model.get_initializer(i)) for i in node.input[1:])
            seen.append((bits, -np.log2(scale), zero))
    assert seen[:3] == [(7, 3, 0), (8, 5, 0), (10, 7, 0)]  # data_in, weight, bias


def test_minifloat_is_floatquant_and_bit_exact(tmp_path):
    model, x = tiny(), rows(scale=8.0)
    p = plan(name="minifloat_ieee", data_in_width=8, data_in_exponent_width=4, weight_width=8,
             weight_exponent_width=4, bias_width=8, bias_exponent_width=4)  # fmt: skip
    subject, path = exported(tmp_path, model, p, x)
    floats = nodes(path)
    assert [n.op_type for n in floats] == ["FloatQuant"] * 6
    assert attrs(floats[0]) == {"rounding_mode": "ROUND", "has_inf": 0, "has_nan": 0,
                                "has_subnormal": 1, "saturation": 1}  # fmt: skip
    got = run_qonnx(path, x)
    want = ref_linear(x.numpy(), model, lambda v: ref_minifloat(v.ravel(), 8, 4).reshape(v.shape))
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert verify_qonnx(subject, tmp_path, 300)["differing_values"] == 0


def test_floatquant_equals_bitscout_next_to_every_power_of_two():
    """FloatQuant finds a value's binade by float32 log2: for each minifloat QONNX is given,
    the float32 values just below and above every power of two quantize as bitscout does."""
    from qonnx.custom_op.general.floatquant import float_quant

    powers = np.exp2(np.arange(-140, 128, dtype=np.float64)).astype(np.float32)
    sweep, below, above = [powers], powers, powers
    for _ in range(40):
        below, above = np.nextafter(below, np.float32(0)), np.nextafter(above, np.float32(np.inf))
        sweep += [below, above]
    v = np.concatenate(sweep)
    v = np.concatenate([v[np.isfinite(v)], -v[np.isfinite(v)]])
    for width, exp in [
        (8, 4),
        (8, 5),
        (12, 5),
        (16, 5),
        (18, 1),
        (24, 7),
        (20, 6),
        (20, 3),
        (3, 1),
    ]:
        fmt = MinifloatIEEE(width, exp)
        assert fmt.mantissa <= MAX_FLOAT_MANTISSA
        theirs = float_quant(v.copy(), np.float32(1), np.float32(exp), np.float32(fmt.mantissa),
                             np.float32(fmt.bias), True, np.float32(fmt.max_value))  # fmt: skip
        mine = fmt.quantize_values(torch.from_numpy(v)).numpy()
        np.testing.assert_array_equal(np.asarray(theirs, dtype=np.float32), mine, err_msg=str(fmt))


def test_bipolar_binary_is_bipolarquant_and_bit_exact(tmp_path):
    model, x = tiny(), rows()
    p = plan(name="binary", data_in_bipolar=True, weight_bipolar=True, bias_bipolar=True)
    subject, path = exported(tmp_path, model, p, x)
    assert [n.op_type for n in nodes(path)] == ["BipolarQuant"] * 6
    want = ref_linear(x.numpy(), model, lambda v: np.where(v >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(run_qonnx(path, x), want.astype(np.float32))
    assert verify_qonnx(subject, tmp_path, 300)["differing_values"] == 0


def test_wide_layer_sums_in_float64_as_bitscout(tmp_path):
    """16-bit inputs and weights: float32 sums are not exact, bitscout sums in float64, and
    so does the exported graph (Cast nodes around the Gemm)."""
    model, x = tiny(), rows()
    subject, path = exported(tmp_path, model, integer((16, 13)), x)
    assert any(n.op_type == "Cast" for n in onnx.load(str(path)).graph.node)
    want = ref_linear(x.numpy(), model, lambda v: ref_fixed(v, 16, 13))
    np.testing.assert_array_equal(run_qonnx(path, x), want.astype(np.float32))
    assert verify_qonnx(subject, tmp_path, 300)["differing_values"] == 0


# --- models ---------------------------------------------------------------------------------


def digits_rows(n: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = load_digits().data[:n].astype(np.float32)
    return torch.from_numpy((x - x.mean(0)) / (x.std(0) + 1e-6))


def test_digits_mlp_mixed_formats_bit_exact(tmp_path):
    torch.manual_seed(1)
    model = build_model("mlp").eval()
    p = {"by": "name",
         "default": {"config": {"name": "NA"}},
         "seq_blocks_0": {"config": integer((8, 4))["default"]["config"]},
         "seq_blocks_2": {"config": plan(name="minifloat_ieee", data_in_width=8,
                          data_in_exponent_width=4, weight_width=6, weight_exponent_width=3,
                          bias_width=8, bias_exponent_width=4)["default"]["config"]},
         "seq_blocks_4": {"config": integer((4, 3), b=(8, 5), x=(6, 2), rounding="floor",
                                            result_width=12, result_frac_width=4)["default"]["config"]}}  # fmt: skip
    subject, _ = exported(tmp_path, model, p, digits_rows(560))
    found = verify_qonnx(subject, tmp_path, 560)
    assert found["differing_values"] == 0 and found["top_class_agreement"] == 1.0
    assert found["nodes"] == {"Quant": 7, "FloatQuant": 3, "BipolarQuant": 0}


def test_batchnorm_relu_model_bit_exact(tmp_path):
    torch.manual_seed(2)
    model = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 3)).eval()  # fmt: skip
    with torch.no_grad():
        for norm in (model[0], model[2]):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.normal_()
            norm.bias.normal_()
    subject, path = exported(tmp_path, model, integer((6, 3), x=(8, 4)), rows(500))
    ops = [n.op_type for n in load_qonnx(path).graph.node]
    assert "BatchNormalization" not in ops and "Relu" in ops  # as scored: fixed point
    found = verify_qonnx(subject, tmp_path, 500)
    assert found["differing_values"] == 0 and found["max_logit_difference"] == 0.0


def test_small_cnn_bit_exact(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = digits_rows(200).reshape(-1, 1, 8, 8)
    subject, path = exported(tmp_path, model.eval(), integer((6, 4), x=(8, 3)), x)
    assert "Conv" in [n.op_type for n in load_qonnx(path).graph.node]
    assert verify_qonnx(subject, tmp_path, 200)["differing_values"] == 0


def test_file_is_qonnx_loadable_with_the_domain_and_opset(tmp_path):
    _, path = exported(tmp_path, tiny(), integer((8, 4)), rows())
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {(o.domain, o.version) for o in proto.opset_import} >= {("", 11), (DOMAIN, 1)}
    assert "Cast" not in [n.op_type for n in proto.graph.node]  # float32 sums are exact here
    model = load_qonnx(path, batch=7)
    assert model.get_tensor_shape(model.graph.output[0].name) == [7, 3]


def test_hls4mls_onnx_front_end_reads_the_quant_nodes(tmp_path):
    """hls4ml parses the file as its QONNX flow prepares one (channels last, Gemm as MatMul):
    every Quant node with the rounding mode bitscout's format has."""
    hls4ml = pytest.importorskip("hls4ml")
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    _, path = exported(tmp_path, tiny(), integer((6, 3), x=(8, 4), rounding="floor"), rows())
    model = load_qonnx(path).transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul())
    layers, _, _ = hls4ml.converters.parse_onnx_model(cleanup_model(model))
    quants = [layer for layer in layers if layer["class_name"] == "Quant"]
    assert len(quants) == 6 and {q["rounding_mode"] for q in quants} == {"FLOOR"}


# --- accumulator and result types ---------------------------------------------------------


def test_result_and_covering_accumulator_are_quant_nodes(tmp_path):
    """A result type rounds (floor here) and saturates the sum; an accumulator wide enough for
    every partial sum changes nothing and is written as a Quant carrying its type."""
    model, x = tiny(), rows()
    p = integer((6, 4), x=(8, 4), rounding="floor", accum_width=20, accum_frac_width=8,
                result_width=7, result_frac_width=2)  # fmt: skip
    subject, path = exported(tmp_path, model, p, x)
    quants = nodes(path)
    assert len(quants) == 10  # per layer: input, weight, bias, accumulator, result
    h = x.numpy().astype(np.float64)
    for i, module in enumerate((model[0], model[2])):
        w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
        q = ref_fixed(h, 8, 4, "floor") @ ref_fixed(w, 6, 4, "floor").T + ref_fixed(
            b, 6, 4, "floor"
        )
        h = ref_fixed(q, 7, 2, "floor")
        if i == 0:
            h = np.maximum(h, 0)
    np.testing.assert_array_equal(run_qonnx(path, x), h.astype(np.float32))
    assert verify_qonnx(subject, tmp_path, 300)["differing_values"] == 0


def test_narrow_accumulator_is_refused(tmp_path):
    p = integer((6, 4), x=(8, 4), accum_width=10, accum_frac_width=4)
    with pytest.raises(ConfigError) as err:
        exported(tmp_path, tiny(), p, rows())
    text = str(err.value)
    assert "\n" not in text and "passes.quantize.0.accum" in text and "integer(width=10" in text
    assert not (tmp_path / "model.onnx").exists()


# --- refused formats ------------------------------------------------------------------------

REFUSED = {
    "wrap": integer((8, 4), overflow="wrap"),
    "half_up": integer((8, 4), rounding="half_up"),
    "wide": integer((25, 10)),
    "one_bit": integer((1, 0)),
    "mantissa": plan(name="minifloat_ieee", data_in_width=20, data_in_exponent_width=2,
                     weight_width=8, weight_exponent_width=4),
    "denorm": plan(name="minifloat_denorm", data_in_width=8, data_in_exponent_width=4),
    "log": plan(name="log", data_in_width=5),
    "binary": plan(name="binary", weight_bipolar=False, data_in_bipolar=False),
    "ternary": plan(name="ternary", data_in_scaling_factor=False),
    "block_fp": plan(name="block_fp", data_in_width=8, data_in_exponent_width=4, data_in_block_size=4),
    "mxint": plan(name="mxint", data_in_width=8, data_in_block_size=2),
    "mxfp": plan(name="mxfp", data_in_width=8, data_in_exponent_width=4, data_in_block_size=2),
}  # fmt: skip
FORMAT_NAME = {"wrap": "integer", "half_up": "integer", "wide": "integer", "one_bit": "integer",
               "mantissa": "minifloat_ieee", "denorm": "minifloat_denorm"}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_inexpressible_format_is_refused_in_one_line(tmp_path, case):
    with pytest.raises(ConfigError) as err:
        exported(tmp_path, tiny(), REFUSED[case], rows())
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("passes.quantize.0.data_in: QONNX 1.0.0 cannot express ")
    assert f"{FORMAT_NAME.get(case, case)}(" in text
    assert not (tmp_path / "model.onnx").exists()


def test_no_validation_rows_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^data: qonnx needs validation rows"):
        write_qonnx(Subject(tiny(), integer((8, 4)), None, "test"), tmp_path)


def test_sum_beyond_float64s_exact_range_is_refused(tmp_path):
    """24-bit inputs and weights over 256 products: 2**54 steps, more than float64 holds, so
    the sum depends on its order and ONNX's Gemm need not add as bitscout does."""
    model = nn.Sequential(nn.Linear(256, 2)).eval()
    with pytest.raises(
        ConfigError, match=r"^passes\.quantize\.0: QONNX export sums more than 2\*\*53 steps"
    ):
        exported(tmp_path, model, integer((24, 12), b=(8, 4)), rows(4, 256))
