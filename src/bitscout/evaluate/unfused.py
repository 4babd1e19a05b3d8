"""Quantized layers that really run: PyTorch's fused paths off while bitscout evaluates, a
check that the forward calls every quantized layer, and the line naming the Linear-like
parameters that stay float.

In eval mode under no-grad, `nn.TransformerEncoderLayer` and `nn.MultiheadAttention` run a
fused kernel that reads `linear1.weight`, `linear2.weight` and the attention's projections
directly: a quantized wrapper put in `linear1`'s place is never called, and a candidate at
1-bit widths scores the float model's accuracy.
"""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from bitscout.errors import ConfigError
from bitscout.quant.apply import QuantPlan, quantize_model
from bitscout.quant.layers import QUANT_TYPES, LayerQuant


@contextmanager
def unfused() -> Iterator[None]:
    """PyTorch's fused fast path of the Transformer layers and of `nn.MultiheadAttention`
    off for the block, so that each quantized layer's own forward runs; the setting the
    caller had is restored afterwards."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def check_called(model: nn.Module, paths: Sequence[str], sample: torch.Tensor) -> None:
    """ConfigError naming the first of the quantizable layers `paths` that `model`'s forward
    does not call on `sample` (run as candidates are, under `unfused`): its formats would
    change nothing that bitscout reports."""
    candidate = quantize_model(model, QuantPlan("name", dict.fromkeys(paths, LayerQuant())))
    calls: Counter[str] = Counter()
    for path in paths:
        layer = candidate.get_submodule(path)
        # Counted on the instance, not by a hook: a hook alone turns PyTorch's fused path off.
        object.__setattr__(layer, "forward", _counting(layer.forward, calls, path))
    with torch.inference_mode(), unfused():
        candidate.eval()(sample)
    missed = [p for p in paths if not calls[p]]
    if missed:
        rule = (
            "is quantized by the space but the model's forward never calls it (something reads "
            "its weight directly), so its formats would not change any result: leave it float"
        )
        raise ConfigError("search_space", f"layer {missed[0]!r} {rule}", missed[0])


def _counting(forward: Callable[..., Any], calls: Counter[str], path: str) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[path] += 1
        return forward(*args, **kwargs)

    return counted


def float_note(model: nn.Module) -> str | None:
    """One line naming the nn.Linear-like parameters that stay float, or None: attention's
    input projections (`in_proj_weight`, or `q/k/v_proj_weight`) and Linear subclasses of no
    registered layer type, such as its `out_proj` (NonDynamicallyQuantizableLinear), which
    `nn.MultiheadAttention` reads without calling."""
    found = []
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, nn.MultiheadAttention):
            found += [f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False)
                      if n.endswith("proj_weight")]  # fmt: skip
        elif isinstance(module, nn.Linear) and type(module) not in QUANT_TYPES:
            found.append(f"{path} ({type(module).__name__})")
    if not found:
        return None
    return f"stay float (not quantizable layers, never searched): {', '.join(found)}"
