"""hls4ml's per-layer configuration for a quantized model, and a check that hls4ml's C++
emulation of it computes what bitscout scored."""

import contextlib
import copy
import io
import itertools
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitscout._core.files import write_text
from bitscout.errors import ConfigError
from bitscout.export.artifacts import grid_state_dict
from bitscout.export.emulation import isolated
from bitscout.export.hardware import NORMS, WIDE, HwType, Node, hardware
from bitscout.export.project import (
    DEFAULTS,
    MODEL_FILE,
    HlsOptions,
    foreign_modules,
    graph_module,
    project_config,
    script,
    write_model,
    write_test_bench,
)
from bitscout.quant.apply import QuantPlan, quantize_model, resolve_plan
from bitscout.quant.datapath import exact_accum
from bitscout.quant.formats import quantize
from bitscout.quant.norms import stored_form

HLS4ML_VERSION = "1.3.0"  # the release the configuration and the check were written against


def input_shape(model: nn.Module) -> tuple[int, ...]:
    """One sample's shape, when the first module tells it (a Linear or a BatchNorm1d)."""
    first = next((m for m in model.modules() if not list(m.children())), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    if isinstance(first, nn.BatchNorm1d):
        return (first.num_features,)
    raise ConfigError("input_shape", "is needed: the model's first module does not tell it")


def casts(nodes: Sequence[Node]) -> Iterator[tuple[str, str, int, int, HwType]]:
    """Every fixed-point to fixed-point cast hls4ml's layers make, as (node, what, source
    width, source frac width, target type): a layer's products (data_in x weight, the full
    `ap_fixed<Wx+Ww, Ix+Iw>` of C++) and its bias into the accumulator, the accumulator into
    the result; a normalization's products into its result."""
    for before, node in itertools.pairwise(nodes):
        x, params = before.result, node.params
        factor = params.get("weight", params.get("scale"))
        target = params.get("accum", node.result)
        if factor is not None:
            width, frac = x.width + factor.width, x.frac_width + factor.frac_width
            what = f"product ap_fixed<{width},{width - frac}> ({x.ap_fixed} x {factor.ap_fixed})"
            yield node.name, what, width, frac, target
        if "bias" in params:
            bias = params["bias"]
            yield node.name, f"bias {bias.ap_fixed}", bias.width, bias.frac_width, target
        if "accum" in params:
            accum = params["accum"]
            yield (node.name, f"accumulator {accum.ap_fixed}", accum.width,
                   accum.frac_width, node.result)  # fmt: skip


def aborts(width: int, frac: int, target: HwType) -> bool:
    """Whether casting a `width`-bit value with `frac` fractional bits to `target` aborts
    hls4ml's ap_types (see `check_casts`)."""
    return target.rounding != "floor" and frac - target.frac_width > width


def check_casts(nodes: Sequence[Node]) -> None:
    """Refuse what hls4ml's bundled ap_types abort on. Casting ap_fixed<W2, I2> to a type
    with F fractional bits that rounds (AP_RND_CONV, AP_RND) reads the source's bit
    F2 - F - 1 to round, and `ap_private::get_bit` asserts it is below W2: a source entirely
    below the target's rounding bit (F2 - F > W2, i.e. I2 < -F) aborts the C++ emulation
    whatever the values (found in ap_fixed_base.h's operator=, checked case by case with
    g++). Truncation (floor) reads no such bit."""
    for name, what, width, frac, target in casts(nodes):
        if aborts(width, frac, target):
            rule = (
                f"hls4ml {HLS4ML_VERSION}'s ap_fixed aborts on this layer: its {what} lies "
                f"entirely below the rounding bit of {target.ap_fixed} (every value rounds "
                "to 0); give that type more fractional bits, or round with floor"
            )
            raise ConfigError(f"passes.quantize.{name}", rule)


def to_hls4ml(
    model: nn.Module, plan: QuantPlan | Mapping[str, Any], shape: Sequence[int] | None = None,
    *, wide: HwType = WIDE, trace: bool = False, options: HlsOptions = DEFAULTS,
) -> dict[str, Any]:  # fmt: skip
    """hls4ml's `HLSConfig` for `model` quantized by `plan`: `Model` defaults (the wide type
    that stands in for float, the strategy and reuse factor of `options`) and one `LayerName`
    entry per node, every precision spelled out with its rounding and overflow, as
    `config_from_pytorch_model(granularity='name')` lays it out. Convert the model with its
    weights on the grid (`grid_state_dict`). A plan whose C++ emulation would abort, or
    would compute otherwise than bitscout under `options`, is refused (`check_casts`,
    `check_options`)."""
    nodes = hardware(model, plan, wide)
    check_casts(nodes)
    check_options(nodes, options)
    layers = {}
    for node in nodes:
        precision = {"result": node.result.ap_fixed}
        precision.update({k: t.ap_fixed for k, t in node.params.items()})
        layers[node.name] = {"Precision": precision, "Trace": trace}
        if node.fan_in is not None:
            layers[node.name]["ReuseFactor"] = options.reuse_factor
    return {
        "Model": {
            "Precision": {"default": wide.ap_fixed}, "ReuseFactor": options.reuse_factor,
            "ChannelsLastConversion": "full", "TransposeOutputs": False,
            "Strategy": options.hls_strategy, "BramFactor": 1_000_000_000, "TraceOutput": False,
        },
        "InputShape": [list(shape or input_shape(model))],  # one shape per input
        "LayerName": layers,
    }  # fmt: skip


def check_options(nodes: Sequence[Node], options: HlsOptions) -> None:
    """Refuse settings under which hls4ml would compute otherwise than bitscout scored.
    bitscout adds a layer's products to its bias in input order, saturating after each
    addition (hls4ml's Latency dense); the Resource strategy adds them in another order, so
    an accumulator that can saturate part way gives other sums (logits off by 0.527 on
    jsc-tiny, issue 22). An accumulator that holds the exact sum, or wraps (modular: any
    order gives the same), is exact under either. hls4ml converts convolutions to
    channels-last itself only with io_parallel."""
    for before, node in itertools.pairwise(nodes):
        if options.strategy == "resource" and _may_saturate(before.result, node):
            raise ConfigError(
                options.key("strategy"),
                f"resource adds {node.name}'s products in another order than bitscout scored, "
                f"and its accumulator {node.params['accum'].ap_fixed} saturates on partial sums"
                " that do not fit: use latency, a wrapping accumulator, or the exact one",
            )
        if options.io_type == "io_stream" and node.kind in ("conv1d", "conv2d"):
            rule = (f"io_stream takes channels-last input hls4ml does not convert; "
                    f"{node.name} is a convolution: use io_parallel")  # fmt: skip
            raise ConfigError(options.key("io_type"), rule)


def _may_saturate(data_in: HwType, node: Node) -> bool:
    """A saturating accumulator the plan fixed that does not hold every partial sum exactly."""
    accum = node.params.get("accum")
    if accum is None or "accum" not in node.given or accum.overflow != "saturate":
        return False
    weight, bias = node.params["weight"], node.params.get("bias")
    exact = exact_accum(data_in, weight, bias, node.fan_in or 0)
    integer = accum.width - accum.frac_width
    return accum.frac_width < exact.frac or integer < exact.width - exact.frac


def write_hls4ml(
    model: nn.Module, plan: QuantPlan | Mapping[str, Any], x: torch.Tensor,
    hls_config: Mapping[str, Any], out: Path, options: HlsOptions,
    about: tuple[str, str | None] = ("a bitscout plan", None),
) -> list[Path]:  # fmt: skip
    """The standalone hls4ml project in `out` (see `export.project`): `hls4ml_config.yml`
    (what `convert_from_config` reads), `hls4ml_config.json` (the HLSConfig alone, for
    `convert_from_pytorch_model`), the model file, `tb_data/` from rows `x` with bitscout's
    predictions, and `convert_hls4ml.py`. `about`: what is exported, the config it came from."""
    import yaml

    grid = grid_model(model, plan)
    module = graph_module(grid)
    predictions = scored(quantize_model(grid, plan), x)
    floats = [n.name for n in hardware(grid, plan) if n.float_]
    wide = hls_config["Model"]["Precision"]["default"]
    text = {
        "hls4ml_config.yml": yaml.safe_dump(project_config(hls_config, options), sort_keys=False),
        "hls4ml_config.json": json.dumps(hls_config, indent=2) + "\n",
        "convert_hls4ml.py": script(
            HLS4ML_VERSION, *about, wide, floats, foreign_modules(module)
        ),
    }  # fmt: skip
    for name, body in text.items():
        write_text(out / name, body)
    files = [out / name for name in text]
    files.append(write_model(module, out / MODEL_FILE))
    return files + write_test_bench(out, x.detach().double().numpy(), predictions)


def grid_model(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> nn.Module:
    """A copy of `model` in eval mode with its quantized weights on their grid, and each
    BatchNorm folded to the scale and shift the hardware stores (`norms.stored_form`)."""
    grid = copy.deepcopy(model).eval()
    grid.load_state_dict(grid_state_dict(model, plan))
    for module in grid.modules():
        if isinstance(module, NORMS):
            stored_form(module)
    return grid


def _requirements() -> Any:
    try:
        import hls4ml
    except ImportError as err:
        rule = "needs hls4ml: pip install 'bitscout[hls4ml]'"
        raise ConfigError("--verify", rule) from err
    if shutil.which("g++") is None:
        raise ConfigError("--verify", "needs a C++ compiler: g++ (Debian: apt-get install g++)")
    return hls4ml


def verify(
    model: nn.Module, plan: QuantPlan | Mapping[str, Any], x: torch.Tensor, project: Path,
    shape: Sequence[int] | None = None, options: HlsOptions = DEFAULTS,
) -> dict[str, Any]:  # fmt: skip
    """Convert `model` with hls4ml as the exported project does (`options`' IO type, strategy
    and reuse factor), compile its C++ emulation and run rows `x` through it and through
    bitscout: per quantized layer the largest difference given hls4ml's own input to that
    layer (0 when the layer is exact), and end to end the share of rows whose top class
    agrees and the largest logit difference."""
    hls4ml = _requirements()
    grid = grid_model(model, plan)
    hls_config = to_hls4ml(grid, plan, shape, trace=True, options=options)
    config = project_config(hls_config, options, grid, str(project), test_bench=False)
    rows = np.ascontiguousarray(x.detach().double().numpy())
    with contextlib.redirect_stdout(io.StringIO()):  # hls4ml narrates every step
        hls = _convert(hls4ml, config)
        y, traced = isolated(
            lambda: hls.trace(rows), f"hls4ml {hls4ml.__version__}'s C++ emulation"
        )
    quantized, nodes = quantize_model(grid, plan), hardware(grid, plan)
    layers = _per_layer(nodes, resolve_plan(grid, plan), quantized, rows, traced)
    z = scored(quantized, x)
    y = channels_first(y, z.shape[1:])
    return {
        "hls4ml": hls4ml.__version__, "rows": len(rows), "layers": layers,
        "top_class_agreement": float(np.mean(z.argmax(1) == y.argmax(1))),
        "max_logit_difference": float(np.max(np.abs(z - y))),
        "float_nodes": [n.name for n in nodes if n.float_],
    }  # fmt: skip


def _convert(hls4ml: Any, config: dict[str, Any]) -> Any:
    """hls4ml's model of `config`; what hls4ml cannot convert (a module its PyTorch front end
    lacks, such as Unflatten) in one line."""
    try:
        return hls4ml.converters.convert_from_config(config)
    except Exception as err:  # hls4ml raises bare Exceptions
        why = " ".join(str(err).split()) or type(err).__name__
        rule = f"hls4ml {hls4ml.__version__} cannot convert this model: {why}"
        raise ConfigError("--verify", rule) from err


def scored(quantized: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The quantized model's outputs for rows `x`, as bitscout scores them."""
    with torch.inference_mode():
        return quantized(x.float()).double().numpy()


def _per_layer(
    nodes: Sequence[Node], resolved: Mapping[str, Any], quantized: nn.Module,
    rows: np.ndarray, traced: Mapping[str, np.ndarray],
) -> list[dict[str, Any]]:  # fmt: skip
    """Each quantized layer given hls4ml's own input to it (its trace of the node before,
    channels-last buffers turned back to PyTorch's layout) against hls4ml's output."""
    shapes = _shapes(quantized, rows[:1])
    out = []
    for i, node in enumerate(nodes):
        if node.path is None or node.fan_in is None or resolved.get(node.path) is None:
            continue
        before = next((n for n in reversed(nodes[1:i]) if n.name in traced), None)
        given = rows
        if before is not None and before.path is not None:
            given = channels_first(traced[before.name], shapes[before.path][1])
        layer = copy.deepcopy(quantized.get_submodule(node.path)).double()
        with torch.inference_mode():
            x = torch.from_numpy(given.reshape(len(given), *shapes[node.path][0]))
            mine = _written(layer(x), node).numpy()
        theirs = channels_first(traced[node.name], mine.shape[1:])
        out.append({"layer": node.name, "max_abs_difference": float(np.max(np.abs(mine - theirs)))})
    return out


def _written(out: torch.Tensor, node: Node) -> torch.Tensor:
    """A layer's output as the hardware writes it: cast to the node's result type where that
    is narrower than the accumulator (the next layer's data_in, which bitscout casts on that
    layer's input instead)."""
    result = node.result
    if node.float_ or result == node.params["accum"]:
        return out
    return quantize(out, result.integer())


def _shapes(model: nn.Module, x: np.ndarray) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Each module's input and output shape (one row, PyTorch's layout) by path."""
    found: dict[str, tuple[tuple[int, ...], ...]] = {}

    def hook(path: str) -> Any:
        def record(_: nn.Module, args: tuple, output: torch.Tensor) -> None:
            found[path] = (tuple(args[0].shape[1:]), tuple(output.shape[1:]))

        return record

    handles = [m.register_forward_hook(hook(p)) for p, m in model.named_modules() if p]
    try:
        with torch.inference_mode():
            model(torch.from_numpy(x).float())
    finally:
        for handle in handles:
            handle.remove()
    return found


def channels_first(values: Any, shape: Sequence[int]) -> np.ndarray:
    """hls4ml's buffer of a tensor of PyTorch shape `shape` (one row: channels, then the
    spatial axes), which it keeps channels-last, in PyTorch's layout."""
    values = np.asarray(values, dtype=np.float64)
    if len(shape) < 2:  # no spatial axis: the layouts agree
        return values.reshape(len(values), *shape)
    last = values.reshape(len(values), *shape[1:], shape[0])
    return np.ascontiguousarray(np.moveaxis(last, -1, 1))
