"""What a hardware engineer loads: the float model's state dict with every quantized tensor on
its grid (`quantized.pt`), each tensor's integer codes (`codes.npz`), and the precision of
every tensor, accumulator and result (`precision.json`)."""

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitscout._core.files import atomic, write_text
from bitscout.export.hardware import (
    HLS4ML_IN_PLACE,
    HLS4ML_SKIPS,
    HwType,
    Node,
    float_nodes,
    hardware,
)
from bitscout.quant.apply import QuantPlan, fx_name, resolve_plan
from bitscout.quant.catalog import DATAPATH, TENSORS
from bitscout.quant.formats import Integer, quantize_values

PRECISION_VERSION = 2  # 2: each layer's hls4ml typedef names
HLS4ML_NAMES = (
    "each layer's `hls4ml` gives the typedef (firmware/defines.h of hls4ml 1.3.0) of each of "
    "its tensors; in the layer's config struct (firmware/parameters.h) weight, bias and accum "
    "are weight_t, bias_t and accum_t; data_in is the previous node's result type (input_t "
    "for the model's input, or the channels-last transpose's layer<i>_t in front of a "
    "convolution) and result is layer<i>_t (result_t for the model's output)"
)


def quantized_tensors(
    model: nn.Module, plan: QuantPlan | Mapping[str, Any]
) -> dict[str, tuple[torch.Tensor, Integer]]:
    """State-dict key -> (values on the grid, format) of every quantized weight and bias."""
    out = {}
    hardware(model, plan)  # refuses formats other than fixed point, naming the layer
    for path, quant in resolve_plan(model, plan).items():
        layer = model.get_submodule(path)
        for name in ("weight", "bias"):
            fmt, value = getattr(quant, name, None), getattr(layer, name)
            if fmt is not None and value is not None:
                out[f"{path}.{name}"] = (quantize_values(value.detach(), fmt), fmt)
    return out


def grid_state_dict(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> dict:
    """`model`'s state dict with each quantized tensor replaced by its values on the grid: it
    loads into the same module class, and quantizing it again changes nothing."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key, (value, _) in quantized_tensors(model, plan).items():
        state[key] = value.to(state[key].dtype)
    return state


def write_checkpoint(model: nn.Module, plan: QuantPlan | Mapping[str, Any], path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(grid_state_dict(model, plan), buffer)
    _write_bytes(path, buffer.getvalue())
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    """Serialized in memory first: torch.save and np.savez report a failed write (a full disk)
    as a RuntimeError or without a file name; a plain write names the file."""
    with atomic(path) as tmp:
        tmp.write_bytes(data)


CODES_LAYOUT = (
    "<layer>.weight and <layer>.bias: int32 codes k, the values k * 2**-frac_width (<key>."
    "frac_width, <key>.width: the format), keyed by hls4ml's layer names. Arrays keep "
    "PyTorch's layout: a Linear weight is [out, in], the transpose of hls4ml's Dense weight "
    "array w<i> ([in, out], flattened in firmware/weights/w<i>.txt); a convolution's is "
    "[out, in/groups, *kernel], channels first."
)


def codes(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each quantized tensor as int32 codes k (its values are k * 2**-frac_width), with its
    `<key>.frac_width` and `<key>.width`, keyed by hls4ml's layer names (`seq_blocks_2.weight`),
    and `layout`: how to read them (`CODES_LAYOUT`)."""
    out: dict[str, np.ndarray] = {"layout": np.array(CODES_LAYOUT)}
    for key, (value, fmt) in quantized_tensors(model, plan).items():
        path, _, tensor = key.rpartition(".")
        name = f"{fx_name(path)}.{tensor}"
        frac = int(fmt.frac_width or 0)  # resolved when the format was made: never None
        k = torch.round(value.double() * 2.0**frac)  # exact: the values are on the grid
        out[name] = k.numpy().astype(np.int32)
        out[f"{name}.frac_width"] = np.array(frac, dtype=np.int32)
        out[f"{name}.width"] = np.array(fmt.width, dtype=np.int32)
    return out


def write_npz(model: nn.Module, plan: QuantPlan | Mapping[str, Any], path: Path) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **codes(model, plan))  # type: ignore[arg-type]  # numpy's stub: allow_pickle
    _write_bytes(path, buffer.getvalue())
    return path


def precision(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> dict[str, Any]:
    """Every node's result type and every layer's tensor, accumulator and result types, with
    which of them bitscout computed and which the plan gave."""
    nodes = hardware(model, plan)
    resolved = resolve_plan(model, plan)
    names = typedefs(nodes)
    return {
        "schema_version": PRECISION_VERSION,
        "hls4ml_names": HLS4ML_NAMES,
        "input": {"name": nodes[0].name, **nodes[0].result.describe()},
        "layers": [
            {**_layer(n, resolved.get(path)), "hls4ml": _names(n, names[i - 1], names[i])}
            for i, n in enumerate(nodes)
            if (path := n.path) is not None and n.fan_in is not None
        ],
        "nodes": [
            {"name": n.name, "kind": n.kind, "float": n.float_, "result": n.result.describe()}
            for n in nodes
        ],
        "float_nodes": float_nodes(nodes),
    }


def typedefs(nodes: Sequence[Node]) -> list[str]:
    """Each node's result typedef as hls4ml 1.3.0 writes it: `input_t` for the input,
    `result_t` for the output, else `layer<i>_t`, i its layer index (the input is 1, each
    layer hls4ml makes the next one); a skipped or in-place module passes its input's on. A
    model with convolutions reads its input through the channels-last transpose hls4ml adds
    after every other layer (the next index)."""
    made = [n for n in nodes[1:] if n.kind not in HLS4ML_SKIPS]
    convs = any(n.kind in ("conv1d", "conv2d") for n in made)
    names = [f"layer{len(made) + 2}_t" if convs else "input_t"]
    index = 2
    for node in nodes[1:]:
        if node.kind in HLS4ML_SKIPS + HLS4ML_IN_PLACE:
            names.append(names[-1])  # its input's variable
        else:
            names.append(f"layer{index}_t")
        index += node.kind not in HLS4ML_SKIPS
    last = max(i for i, n in enumerate(nodes) if n.kind not in HLS4ML_SKIPS + HLS4ML_IN_PLACE)
    return [n if n != names[last] else "result_t" for n in names]


def _names(node: Node, data_in: str, result: str) -> dict[str, str]:
    params = {k: f"{node.name}_{k}_t" for k in ("weight", "bias", "accum") if k in node.params}
    return {"data_in": data_in, **params, "result": result}


def _layer(node: Node, quant: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": node.name, "path": node.path, "type": node.kind,
                             "fan_in": node.fan_in, "float": node.float_}  # fmt: skip
    for tensor in TENSORS:
        fmt = getattr(quant, tensor, None)
        entry[tensor] = "float" if fmt is None else _describe(fmt)
    for tensor in DATAPATH:
        hw = node.params["accum"] if tensor == "accum" else node.result
        source = "given" if tensor in node.given else "computed"
        entry[tensor] = {**hw.describe(), "source": source}
    return entry


def _describe(fmt: Integer) -> dict[str, Any]:
    return HwType.of(fmt).describe()


def write_precision(model: nn.Module, plan: QuantPlan | Mapping[str, Any], path: Path) -> Path:
    write_text(path, json.dumps(precision(model, plan), indent=2) + "\n")
    return path
