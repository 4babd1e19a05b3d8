"""Evaluate a model on held tensors: accuracy and mean cross-entropy."""

import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 65536  # rows per forward pass: bounds memory on large splits


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of `model` on (x, y), computed afresh."""
    model.eval()
    correct = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(y), CHUNK):
            logits = model(x[start : start + CHUNK])
            target = y[start : start + CHUNK]
            correct += int((logits.argmax(dim=1) == target).sum())
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
    return {"accuracy": correct / len(y), "loss": loss_sum / len(y)}
