"""QONNX: the float model's ONNX graph with a QONNX node (`qonnx.custom_op.general`) on every
quantized tensor, the form FINN, hls4ml's ONNX front end and QONNX's own executor read; and a
check that QONNX's executor computes what bitscout scored, bit for bit.

A node is written only where its definition (qonnx 1.0.0's `custom_op/general`) computes
bitscout's values exactly: fixed point as `Quant` (which clamps, then rounds: equal to
rounding, then clamping, since the bounds are integers), IEEE-style minifloats as
`FloatQuant`, bipolar binary as `BipolarQuant`. Everything else is refused, naming the layer.
"""

import contextlib
import io
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bitscout._core.files import atomic
from bitscout.errors import ConfigError
from bitscout.export.rows import validation_rows
from bitscout.quant.apply import QuantPlan, copy_model, fx_name, quantize_model, resolve_plan
from bitscout.quant.binary import Binary
from bitscout.quant.datapath import exact_accum, fan_in, sum_dtype
from bitscout.quant.floats import MinifloatIEEE
from bitscout.quant.formats import Integer, NumberFormat
from bitscout.quant.layers import LayerQuant
from bitscout.quant.norms import STAND_IN, fixed_params

QONNX_VERSION = "1.0.0"  # the release whose operator definitions the nodes follow
DOMAIN = "qonnx.custom_op.general"
# QONNX's docs rename Quant to IntQuant and run both alike; Quant is the name that FINN and
# hls4ml (which reads both) have read longest.
QUANT_OP = "Quant"
ONNX_OPSET = 11  # qonnx.util.basic.get_preferred_onnx_opset()
QONNX_OPSET = 1  # qonnx.util.basic.get_preferred_qonnx_opset()
# QONNX's HALF_UP rounds ties away from zero; bitscout's half_up (hls4ml's AP_RND) rounds
# them towards +inf, so it has no QONNX mode.
ROUNDING = {"half_even": "ROUND", "floor": "FLOOR"}
MAX_QUANT_WIDTH = 24  # Quant computes in float32: wider codes are not all float32 values
# FloatQuant places a value in its binade by float32's log2, which rounds values within about
# 2**-18 of a power of two up to it; with at most 16 mantissa bits such a value rounds to that
# power in either binade (tests/test_qonnx.py sweeps every float32 next to one).
MAX_FLOAT_MANTISSA = 16
MAX_EXACT_DOUBLE = 2**53  # steps a float64 sum holds exactly, in any order


class Subject(Protocol):
    """What is exported (`bitscout.export.run.Subject` is one): the float model, its plan and
    validation rows (the input shape, and the rows `verify_qonnx` runs)."""

    @property
    def model(self) -> nn.Module: ...
    @property
    def plan(self) -> QuantPlan | Mapping[str, Any]: ...
    @property
    def x(self) -> torch.Tensor | None: ...


def _refuse(where: str, fmt: NumberFormat, why: str) -> ConfigError:
    rule = f"QONNX {QONNX_VERSION} cannot express {fmt.describe()} exactly: {why}"
    return ConfigError(f"passes.quantize.{where}", rule)


def check_format(fmt: NumberFormat, where: str) -> NumberFormat:
    """`fmt` if a QONNX node computes it exactly, else a ConfigError naming `where`."""
    if isinstance(fmt, Integer):
        if fmt.overflow == "wrap":
            raise _refuse(where, fmt, "QONNX's Quant saturates, it has no wrap-around")
        if fmt.rounding not in ROUNDING:
            why = "QONNX's HALF_UP rounds ties away from zero, hls4ml's AP_RND towards +inf"
            raise _refuse(where, fmt, why)
        if fmt.width == 1:
            why = "QONNX's 1-bit signed Quant is bipolar (+-1), a 1-bit integer is -1 or 0"
            raise _refuse(where, fmt, why)
        if fmt.width > MAX_QUANT_WIDTH:
            why = f"Quant computes in float32, which holds codes of at most {MAX_QUANT_WIDTH} bits"
            raise _refuse(where, fmt, why)
        return fmt
    if isinstance(fmt, MinifloatIEEE):
        if fmt.mantissa > MAX_FLOAT_MANTISSA:
            bits = MAX_FLOAT_MANTISSA
            why = f"FloatQuant's float32 log2 misplaces values of more than {bits} mantissa bits"
            raise _refuse(where, fmt, why)
        return fmt
    if isinstance(fmt, Binary) and fmt.bipolar:
        return fmt
    why = {
        "binary": "its scale is a statistic of the data (BipolarQuant is +-1 only)",
        "ternary": "its threshold and scale are statistics of the data",
        "minifloat_denorm": "it has no implicit leading bit (FloatQuant has)",
        "log": "QONNX has no power-of-two quantizer",
    }.get(fmt.name, "a shared scale per block has no QONNX node")
    raise _refuse(where, fmt, why)


class _Quantize(torch.autograd.Function):
    """bitscout's quantization when traced; its QONNX node when exported."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
        return fmt.quantize_values(x)

    @staticmethod
    def symbolic(g: Any, x: Any, fmt: NumberFormat) -> Any:
        def const(value: float) -> Any:
            return g.op("Constant", value_t=torch.tensor(value, dtype=torch.float32))

        if isinstance(fmt, Integer):
            scale, bits = const(2.0**-fmt.frac_width), const(float(fmt.width))  # type: ignore[operator]
            out = g.op(f"{DOMAIN}::{QUANT_OP}", x, scale, const(0.0), bits, signed_i=1, narrow_i=0,
                       rounding_mode_s=ROUNDING[fmt.rounding])  # fmt: skip
        elif isinstance(fmt, MinifloatIEEE):
            args = (fmt.exponent_width, fmt.mantissa, fmt.bias, fmt.max_value)
            out = g.op(f"{DOMAIN}::FloatQuant", x, const(1.0), *(const(float(a)) for a in args),
                       rounding_mode_s="ROUND", has_inf_i=0, has_nan_i=0, has_subnormal_i=1,
                       saturation_i=1)  # fmt: skip
        else:
            out = g.op(f"{DOMAIN}::BipolarQuant", x, const(1.0))
        out.setType(x.type())
        return out


def _q(x: torch.Tensor, fmt: NumberFormat | None) -> torch.Tensor:
    return x if fmt is None else _Quantize.apply(x, fmt)


Layer = nn.Linear | nn.Conv1d | nn.Conv2d


class _Exported(nn.Module):
    """A quantized layer as QONNX writes it: a node on the input, weight and bias, the float
    operator, the accumulator and result nodes; in float64 where bitscout sums in float64."""

    def __init__(self, layer: Layer, quant: LayerQuant, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.layer, self.quant, self.dtype = layer, quant, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, layer = self.quant, self.layer
        x, w = _q(x, q.data_in), _q(layer.weight, q.weight)
        b = None if layer.bias is None else _q(layer.bias, q.bias)
        if self.dtype is not None:
            x, w = x.to(self.dtype), w.to(self.dtype)
            b = None if b is None else b.to(self.dtype)
        out = F.linear(x, w, b) if isinstance(layer, nn.Linear) else layer._conv_forward(x, w, b)
        out = _q(_q(out, q.accum), q.result)
        return out if self.dtype is None else out.float()  # a Cast node only where needed


class _ExportedNorm(nn.Module):
    """A BatchNorm as bitscout scores it (`quant.norms.fixed_norm`), in ONNX's own operators
    on float64: the input's and the result's stand-in casts as Round, Min and Max (ONNX's Round
    ties to even, as the stand-in does), the scale and shift as constants on its grid. Exact
    while the codes' products stay under 2**53 (a float32 input and a scale under 2**13:
    24 + 29 bits); `verify_qonnx` counts any value that differs. QONNX's Quant would cast
    the 32-bit result to float32 before the next node, so it is not used here."""

    ks: torch.Tensor
    kb: torch.Tensor

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        scale, shift = fixed_params(norm)
        self.register_buffer("ks", scale * 2.0**STAND_IN.frac_width)  # type: ignore[operator]
        self.register_buffer("kb", shift * 2.0 ** (2 * STAND_IN.frac_width))  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2.0**STAND_IN.frac_width  # type: ignore[operator]
        shape = (-1,) + (1,) * (x.dim() - 2)  # channels on dim 1
        k = self._saturated(torch.round(x.double() * step))
        total = k * self.ks.view(shape) + self.kb.view(shape)  # on the grid of 2**-32
        return (self._saturated(torch.round(total / step)) / step).float()

    @staticmethod
    def _saturated(k: torch.Tensor) -> torch.Tensor:
        # Min and Max, not Clip: onnxruntime has no float64 Clip at opset 11
        lo, hi = (
            torch.tensor(float(v), dtype=torch.float64) for v in (STAND_IN.k_min, STAND_IN.k_max)
        )
        return torch.maximum(torch.minimum(k, hi), lo)


def _sum_dtype(layer: nn.Module, quant: LayerQuant, where: str) -> torch.dtype | None:
    """The dtype bitscout's layer sums in (a Linear with an accumulator or result type sums in
    float64, `datapath.linear`); refused where float64 is exact only in bitscout's order."""
    dtype = sum_dtype(quant.data_in, quant.weight, quant.bias, fan_in(layer))
    if isinstance(layer, nn.Linear) and (quant.accum or quant.result):
        dtype = torch.float64
    if dtype is not torch.float64 or quant.data_in is None or quant.weight is None:
        return dtype
    grids = [f.grid() for f in (quant.data_in, quant.weight, quant.bias) if f is not None]
    known = [g for g in grids if g is not None]
    if len(known) < len(grids):
        return dtype  # a scale from the data: bitscout's float64 sum is not exact either
    # every product and partial sum is a multiple of the finest step (as `sum_dtype` counts)
    (ex, kx), (ew, kw), *rest = known
    step = min([ex + ew, *(e for e, _ in rest)])
    steps = fan_in(layer) * kx * kw * 2 ** (ex + ew - step)
    steps += sum(k * 2 ** (e - step) for e, k in rest)
    if steps > MAX_EXACT_DOUBLE:
        rule = "sums more than 2**53 steps: float64 is exact only in bitscout's order"
        raise ConfigError(f"passes.quantize.{where}", f"QONNX export {rule}", steps)
    return dtype


def _check_accum(layer: nn.Module, quant: LayerQuant, where: str) -> None:
    """An accumulator is written when it never rounds or saturates: a narrower one changes
    partial sums in input order, which no QONNX node on the sum expresses."""
    if quant.accum is None:
        return
    x, w = quant.data_in, quant.weight
    fixed = isinstance(x, Integer) and isinstance(w, Integer)
    b = quant.bias if isinstance(quant.bias, Integer) or layer.bias is None else None
    if fixed and (layer.bias is None or b is not None):
        need = exact_accum(x, w, b, fan_in(layer))  # type: ignore[arg-type]
        a = quant.accum
        if a.frac_width >= need.frac and a.width - a.frac_width >= need.integer:  # type: ignore[operator]
            return
    why = "narrower than the exact accumulator, it changes partial sums in order"
    raise _refuse(f"{where}.accum", quant.accum, why)


def qonnx_model(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> nn.Module:
    """A copy of `model` whose quantized layers trace to QONNX nodes (every format checked)."""
    new = copy_model(model).float().eval()
    for path, quant in resolve_plan(model, plan).items():
        if quant is None:
            continue
        where, layer = fx_name(path), new.get_submodule(path)
        if not isinstance(layer, Layer):
            rule = f"QONNX export writes Linear and Conv layers; {where} is {type(layer).__name__}"
            raise ConfigError(f"passes.quantize.{where}", rule)
        formats = {**quant.tensors, "accum": quant.accum, "result": quant.result}
        for tensor, fmt in formats.items():
            if fmt is not None:
                check_format(fmt, f"{where}.{tensor}")
        _check_accum(layer, quant, where)
        parent_path, _, child = path.rpartition(".")
        exported = _Exported(layer, quant, _sum_dtype(layer, quant, where))
        setattr(new.get_submodule(parent_path), child, exported)
    for path, module in list(new.named_modules()):
        if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
            parent_path, _, child = path.rpartition(".")
            setattr(new.get_submodule(parent_path), child, _ExportedNorm(module))
    return new


def _requirements() -> Any:
    try:
        import onnx
        import qonnx  # noqa: F401 - checked here, used by the callers
    except ImportError as err:
        raise ConfigError("qonnx", "needs qonnx: pip install 'bitscout[qonnx]'") from err
    return onnx


def write_qonnx(subject: Subject, out: Path) -> Path:
    """`out/model.onnx`: `subject.model` exported by torch's TorchScript exporter (opset 11,
    QONNX's) with a QONNX node on each tensor `subject.plan` quantizes, for a batch of one
    row (FINN's form; `load_qonnx` sets another). A format QONNX cannot express is refused
    before anything is written."""
    _requirements()
    traced = qonnx_model(subject.model, subject.plan)
    one_row = validation_rows(subject, "qonnx")[:1].float()
    with (
        tempfile.TemporaryDirectory(prefix="bitscout-qonnx-") as tmp,
        contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings(),
    ):  # fmt: skip
        # chosen: the TorchScript exporter writes an autograd.Function's `symbolic` node
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # bitscout's values, traced
        torch.onnx.export(
            traced, (one_row,), f"{tmp}/model.onnx", dynamo=False,
            opset_version=ONNX_OPSET, custom_opsets={DOMAIN: QONNX_OPSET},
            input_names=["input"], output_names=["output"],
        )  # fmt: skip
        data = Path(tmp, "model.onnx").read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    with atomic(out / "model.onnx") as part:
        part.write_bytes(data)
    return out / "model.onnx"


def load_qonnx(path: Path, batch: int = 1) -> Any:
    """`path` as QONNX reads it: a ModelWrapper, cleaned up and with its shapes inferred for
    `batch` rows (QONNX's executor takes fixed shapes only)."""
    _requirements()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(ModelWrapper(str(path)))
    if batch != 1:
        del model.graph.value_info[:]  # inferred again below, for the new batch
        for tensor in (model.graph.input[0], model.graph.output[0]):
            shape = model.get_tensor_shape(tensor.name)
            model.set_tensor_shape(tensor.name, [batch, *shape[1:]])
    return model.transform(InferShapes())


def run_qonnx(path: Path, x: torch.Tensor) -> np.ndarray:
    """Rows `x` through `path` by QONNX's executor (`qonnx.core.onnx_exec.execute_onnx`)."""
    from qonnx.core.onnx_exec import execute_onnx

    model = load_qonnx(path, len(x))
    name, output = model.graph.input[0].name, model.graph.output[0].name
    rows = np.ascontiguousarray(x.detach().float().numpy())
    return np.asarray(execute_onnx(model, {name: rows})[output])


def verify_qonnx(subject: Subject, out: Path, rows: int) -> dict[str, Any]:
    """QONNX's executor on `out/model.onnx` against bitscout on the first `rows` validation
    rows: the values that differ, the largest difference and the share of rows whose top
    class agrees."""
    x = validation_rows(subject, "verify")[:rows].float()
    theirs = run_qonnx(out / "model.onnx", x).astype(np.float64)
    with torch.inference_mode():
        mine = quantize_model(subject.model, subject.plan).float()(x).double().numpy()
    theirs = theirs.reshape(mine.shape)
    # counted in the file as written: QONNX's cleanup folds a FloatQuant on a weight
    nodes = [n.op_type for n in _requirements().load(str(out / "model.onnx")).graph.node]
    return {
        "qonnx": QONNX_VERSION, "rows": len(x),
        "differing_values": int(np.sum(mine != theirs)),
        "max_logit_difference": float(np.max(np.abs(mine - theirs))),
        "top_class_agreement": float(np.mean(mine.argmax(-1) == theirs.argmax(-1))),
        "nodes": {op: nodes.count(op) for op in ("Quant", "FloatQuant", "BipolarQuant")},
    }  # fmt: skip
