"""Hutchinson's estimate of the Hessian trace of the loss per layer (HAWQ-v2's sensitivity).

For a layer's weights w, trace(H) = E[vᵀ H v] over Rademacher vectors v (entries ±1 with
equal odds), and H v is a Hessian-vector product: the gradient of (∇w L · v), one double
backward pass, so the Hessian itself is never formed. Each layer gets its own v, so the
estimate is of that layer's own block and other layers add no variance to it.

The fused attention kernels (flash, memory-efficient, and `nn.MultiheadAttention`'s fast path)
have no double backward, so the probe runs under PyTorch's math kernel with the fast path off.
"""

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bitscout.data.containers import EvalData
from bitscout.evaluate.evaluator import one_thread
from bitscout.quant.apply import copy_model

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FEW_ROWS = 16384


@dataclass(frozen=True)
class HessianTrace:
    """A layer's estimate: `trace` of the Hessian of the mean loss w.r.t. its weights, the
    number of those `weights`, and `samples` Rademacher vectors behind the estimate."""

    trace: float
    weights: int
    samples: int

    @property
    def per_weight(self) -> float:
        """HAWQ-v2's average trace: layers of different sizes become comparable."""
        return self.trace / self.weights


def hessian_traces(
    model: nn.Module,
    data: EvalData,
    groups: Mapping[str, Sequence[str]],
    samples: int,
    seed: int,
    loss_fn: LossFn | None = None,
) -> dict[str, HessianTrace]:
    """Per group (a layer key and the module paths it governs), Hutchinson's estimate of the
    Hessian trace of the mean loss over `data` w.r.t. the weights of those modules, from
    `samples` seeded Rademacher vectors. `model` is never modified (a copy is differentiated).
    The loss is cross-entropy unless `loss_fn(outputs, targets)` (a batch mean) is given."""
    net = copy_model(model).to(data.device).eval()  # eval: BatchNorm's running statistics
    for p in net.parameters():
        p.requires_grad_(False)  # only the weights asked for get second derivatives
    weights: dict[str, list[torch.Tensor]] = {
        key: [_weight(net, path) for path in paths] for key, paths in groups.items()
    }
    for tensors in weights.values():
        for w in tensors:
            w.requires_grad_(True)
    totals = dict.fromkeys(weights, 0.0)
    # On a few thousand rows a Hessian-vector product takes tens of microseconds, where
    # OpenMP's fork and join cost more than a second thread saves (ten times more on a busy
    # core); on more rows the threads pay.
    threads = one_thread() if data.rows <= FEW_ROWS else contextlib.nullcontext()
    with threads, twice_differentiable():
        for x, y in data.batches():
            # The mean loss over every row is the sum over batches of each batch's mean times
            # its share of the rows; the Hessian is linear in the loss, so batches add alike.
            loss = _loss(net(x), y, loss_fn) * (len(y) / data.rows)
            _accumulate(loss, weights, samples, seed, totals)
    return {key: HessianTrace(totals[key] / samples, sum(w.numel() for w in ws), samples)
            for key, ws in weights.items()}  # fmt: skip


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Attention through kernels that have a double backward: the math kernel, and no fast
    path in `nn.MultiheadAttention` (a process-wide flag, restored afterwards)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def _weight(net: nn.Module, path: str) -> torch.Tensor:
    weight = net.get_submodule(path).weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{path}.weight is not a tensor")
    return weight


def _loss(outputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn | None) -> torch.Tensor:
    if loss_fn is not None:
        return loss_fn(outputs, targets)
    return F.cross_entropy(outputs, targets)


def _accumulate(
    loss: torch.Tensor,
    weights: Mapping[str, list[torch.Tensor]],
    samples: int,
    seed: int,
    totals: dict[str, float],
) -> None:
    """Add vᵀ H v of one batch's loss for each sample and group to `totals`. Each group's
    generator is seeded afresh, for every batch (each sample keeps its v over all batches)
    and for every group (a layer's estimate does not depend on which others are asked for)."""
    every = [w for ws in weights.values() for w in ws]
    grads = dict(zip(map(id, every), torch.autograd.grad(loss, every, create_graph=True),
                     strict=True))  # fmt: skip
    for key, tensors in weights.items():
        generator = torch.Generator().manual_seed(seed)
        for _ in range(samples):
            vs = [_rademacher(w, generator) for w in tensors]
            totals[key] += _vhv([grads[id(w)] for w in tensors], tensors, vs)


def _vhv(grads: list[torch.Tensor], tensors: list[torch.Tensor], vs: list[torch.Tensor]) -> float:
    """vᵀ H v for one v: a gradient that does not depend on the weights (a loss linear in
    them) has no second derivative, which counts as zero rather than failing."""
    curved = [i for i, g in enumerate(grads) if g.requires_grad]
    if not curved:
        return 0.0
    hvs = torch.autograd.grad([grads[i] for i in curved], tensors,
                              grad_outputs=[vs[i] for i in curved], retain_graph=True,
                              allow_unused=True)  # fmt: skip
    return sum(float((v * hv).sum()) for v, hv in zip(vs, hvs, strict=True) if hv is not None)


def _rademacher(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """±1 with equal odds, drawn on the CPU (the same numbers on every device)."""
    signs = torch.randint(0, 2, like.shape, generator=generator, dtype=torch.int8) * 2 - 1
    return signs.to(device=like.device, dtype=like.dtype)
