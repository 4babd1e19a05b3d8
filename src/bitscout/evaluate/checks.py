"""What an evaluator refuses before it scores anything: a model whose output or a dataset whose
targets the chosen metrics cannot read, and a quantized layer the model's forward never calls
(each in one line naming the setting to change)."""

from collections.abc import Collection, Sequence

import torch
from torch import nn

from bitscout.data.containers import EvalData, check_classes
from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import LossFn
from bitscout.evaluate.unfused import check_called, float_note
from bitscout.quant.layers import LayerQuant


def output_shape(model: nn.Module, sample: torch.Tensor) -> tuple[int, ...]:
    """The shape of one row of the model's output; refused unless it is one tensor."""
    with torch.inference_mode():
        out = model(sample)
    if not isinstance(out, torch.Tensor):
        raise ConfigError("model", "must return one tensor of outputs", type(out).__name__)
    return tuple(out.shape[1:])


def check_available(
    metrics: Sequence[str], loss_fn: LossFn | None, timed: bool, data: EvalData,
    out_shape: tuple[int, ...],
) -> None:  # fmt: skip
    """Accuracy and the default loss need class-index targets and outputs [rows, classes];
    latency (`timed`) needs the rows in memory."""
    _, y = next(iter(data.batches()))
    classes = not (y.is_floating_point() or y.is_complex()) and y.dim() == 1
    logits = len(out_shape) == 1
    if "accuracy" in metrics and not (classes and logits):
        rule = "is not available: it needs class-index targets and outputs [rows, classes]"
        raise ConfigError("accuracy", f"{rule}, got targets {y.dtype} {tuple(y.shape[1:])}")
    if "loss" in metrics and loss_fn is None and not (classes and logits):
        rule = "needs class-index targets for cross-entropy: pass loss_fn for other targets"
        raise ConfigError("loss", rule, str(y.dtype))
    if timed and not data.held:
        raise ConfigError("latency", "needs the validation data in memory: raise the memory budget")
    if classes and logits:
        check_labels(metrics, loss_fn, data, out_shape)


def check_labels(
    metrics: Sequence[str], loss_fn: LossFn | None, data: EvalData, out_shape: tuple[int, ...],
    key: str = "data",
) -> None:  # fmt: skip
    """Class-index targets of `data` within the model's outputs: -1 would silently be the
    last class of accuracy's and cross-entropy's batched forms."""
    if "accuracy" in metrics or ("loss" in metrics and loss_fn is None):
        check_classes(data.labels, out_shape, key)


def check_layers(
    model: nn.Module, first: dict[str, LayerQuant | None], fixed: Collection[str],
    sample: torch.Tensor,
) -> str | None:  # fmt: skip
    """Every layer that a candidate (`first`, the space's first) quantizes is called by the
    forward; a note naming the Linear-like parameters that stay float, if any."""
    check_called(model, [p for p, q in first.items() if p not in fixed or q], sample)
    return float_note(model)
