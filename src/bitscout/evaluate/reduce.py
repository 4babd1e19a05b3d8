"""Forward metrics of g candidates from blocks of rows of their logits: sums over rows divided
by the row count, the user's loss batch by batch, and the metrics that need every row at once
on the logits kept whole."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bitscout.evaluate.metrics import (
    COUNTED,
    LossFn,
    Metric,
    MetricContext,
    compute_metrics,
    forward_sums,
)

Blocks = Iterable[tuple[torch.Tensor, torch.Tensor]]  # logits [rows, g, ...] and their targets


@dataclass(frozen=True)
class Reduction:
    """What to compute: the forward metrics `names`, those of them with a batched form, the
    user's loss (None: cross-entropy's batched form), the model's output shape per row, and
    what a whole-logits metric's context needs."""

    names: Sequence[str]
    batched: Sequence[str]
    loss_fn: LossFn | None
    out_shape: tuple[int, ...]
    profile: Any
    extra: Mapping[str, Metric]


def forward_metrics(how: Reduction, g: int, blocks: Blocks) -> list[dict[str, float]]:
    """The metrics of each of `g` candidates; those counted inside the datapath
    (`metrics.COUNTED`) are left to the caller."""
    by_user = set() if how.loss_fn is None else {"loss"}
    batched = [m for m in how.batched if m not in by_user]
    other = [m for m in how.names if m not in (*by_user, *batched, *COUNTED)]
    sums = {m: np.zeros(g) for m in (*batched, *by_user)}
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    total = 0
    for block, targets in blocks:
        for name, value in forward_sums(batched, block, targets).items():
            sums[name] += value
        if how.loss_fn is not None:
            for i in range(g):
                outputs = block[:, i].reshape(len(block), *how.out_shape)
                sums["loss"][i] += float(how.loss_fn(outputs, targets)) * len(block)
        total += len(block)
        kept += [(block, targets)] if other else []
    result = [{m: float(sums[m][i]) / total for m in sums} for i in range(g)]
    for i in range(g) if other else ():
        logits = torch.cat([b[:, i] for b, _ in kept]).reshape(total, *how.out_shape)
        targets = torch.cat([t for _, t in kept])
        ctx = MetricContext(how.profile, {}, logits=logits, targets=targets)
        result[i].update(compute_metrics(other, ctx, how.extra))
    return result


def with_targets(blocks: Iterable[torch.Tensor], y: torch.Tensor) -> Iterator:
    """Blocks of logits paired with the targets of their rows, in order."""
    start = 0
    for block in blocks:
        yield block, y[start : start + len(block)]
        start += len(block)
