"""Running a model on rows: its logits in chunks (`predict`), its accuracy and loss
(`evaluate_model`), on one thread (`one_thread`), with PyTorch's fused paths off (`unfused`)."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from bitscout.evaluate.metrics import forward_sums
from bitscout.evaluate.unfused import unfused
from bitscout.quant.apply import copy_model

CHUNK = 65536  # rows per forward pass: bounds memory on large splits


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of `model` on (x, y), computed afresh with the
    definitions of the `accuracy` and `loss` metrics."""
    model.eval()
    sums = {"accuracy": 0.0, "loss": 0.0}
    with torch.inference_mode(), unfused():
        for start in range(0, len(y), CHUNK):
            logits = model(x[start : start + CHUNK]).unsqueeze(1)
            for name, value in forward_sums(sums, logits, y[start : start + CHUNK]).items():
                sums[name] += float(value[0])
    return {name: total / len(y) for name, total in sums.items()}


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block: the fast path's blocks are cache-sized, where
    OpenMP's fork and join cost more than a second thread saves, and a busy core stalls every
    operation. Parallel searches run one process per core (n_jobs) instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of `model` on `x`, in chunks to bound memory."""
    with torch.inference_mode(), unfused():
        return torch.cat([model(x[s : s + CHUNK]) for s in range(0, len(x), CHUNK)])


def floating_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` on `device`: itself when it is there already, else a copy (never moved)."""
    params = list(model.parameters())
    if not params or params[0].device == device:
        return model
    return copy_model(model).to(device)
