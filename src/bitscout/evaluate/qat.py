"""Quantization-aware training of one candidate: MASE's `basic_train` software runner, made
deterministic. The candidate (built by `quantize_model` from the float weights) trains with
its fake quantization in the forward pass and straight-through gradients, on the training
split only; it is scored afterwards on validation data like any candidate.

MASE's semantics are kept where they are defined (`chop/actions/search/strategies/runners/
software/train.py`): `num_samples` caps the samples trained on (`ceil(num_samples /
batch_size)` steps, at most `max_epochs` epochs); the learning-rate schedule spans
`max_epochs` epochs of steps whatever `num_samples` says, with `num_warmup_steps` of linear
warm-up (transformers' `get_scheduler` formulas); gradients accumulate over
`gradient_accumulation_steps` batches (an epoch always ends on an optimizer step, so that
a fidelity ladder may stop there); biases and normalization weights get no weight decay.
Unlike MASE, no metric is taken from the training batches, every candidate sees the same
seeded batch order (the same config trains to the same weights, whatever ran before it), and
the schedule does not depend on where a fidelity ladder stops the training.
"""

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bitscout.errors import ConfigError
from bitscout.evaluate.forward import one_thread
from bitscout.evaluate.unfused import unfused

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OnEpoch = Callable[[int], bool]  # epochs done -> go on training


@dataclass(frozen=True)
class TrainSettings:
    """How each candidate trains (MASE's `sw_runner.basic_train` keys by their Python names:
    `epochs` is `max_epochs`, `warmup_steps` is `num_warmup_steps`, `accumulation` is
    `gradient_accumulation_steps`). `seed` seeds every candidate's batch order and any
    randomness of its forward (dropout), mixed with the candidate's own formats."""

    epochs: int = 3
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 64
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    accumulation: int = 1
    num_samples: int | None = None  # None: every sample of every epoch
    seed: int = 0

    def steps_per_epoch(self, rows: int) -> int:
        return math.ceil(rows / self.batch_size)

    def total_batches(self, rows: int) -> int:
        """Batches trained in all: `max_epochs` epochs, fewer when `num_samples` says so."""
        every = self.steps_per_epoch(rows) * self.epochs
        if self.num_samples is None:
            return every
        return min(every, math.ceil(self.num_samples / self.batch_size))


def lr_factor(settings: TrainSettings, step: int, total: int) -> float:
    """The learning rate's multiplier at optimizer step `step` of `total` (transformers'
    `get_scheduler`: `constant` ignores `num_warmup_steps` there, so it does here)."""
    warm, name = settings.warmup_steps, settings.lr_scheduler
    if name == "constant":
        return 1.0
    if step < warm:
        return step / max(1, warm)
    if name == "constant_with_warmup":
        return 1.0
    if name == "linear":  # transformers' form: 0 once a warm-up as long as training ends
        return max(0.0, (total - step) / max(1, total - warm))
    progress = (step - warm) / max(1, total - warm)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """MASE's two groups: no weight decay on biases and normalization layers' weights."""
    plain: list[nn.Parameter] = []
    exempt: list[nn.Parameter] = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                no_decay = name == "bias" or isinstance(module, NORMS)
                (exempt if no_decay else plain).append(p)
    return [{"params": plain, "weight_decay": weight_decay},
            {"params": exempt, "weight_decay": 0.0}]  # fmt: skip


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    groups = param_groups(model, settings.weight_decay)
    if not any(g["params"] for g in groups):  # else every candidate fails in backward()
        rule = "has no parameter that requires grad: quantization-aware training moves none"
        raise ConfigError("model", rule, type(model).__name__)
    lr = settings.learning_rate
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    return torch.optim.Adam(groups, lr=lr)


def candidate_seed(seed: int, identity: str) -> int:
    """A seed of its own for each candidate: the run's seed mixed with what the candidate is
    (its formats per layer), so its training does not depend on the order candidates ran."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Trainer:
    """Trains candidates on `(x, y)`, the training split, held in memory."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
        loss_fn: LossFn | None = None,
    ) -> None:  # fmt: skip
        self.x, self.y = x, y
        self.settings = settings
        self.loss_fn = loss_fn or F.cross_entropy

    @property
    def rows(self) -> int:
        return len(self.y)

    def epochs_of(self) -> int:
        """Epochs a full training trains: `num_samples` may stop the last ones early."""
        per = self.settings.steps_per_epoch(self.rows)
        return math.ceil(self.settings.total_batches(self.rows) / per)

    def fit(
        self, candidate: nn.Module, plan: Mapping[str, Any], on_epoch: OnEpoch | None = None
    ) -> int:
        """Train `candidate`, the quantized model of `plan` (formats by layer path), as every
        candidate of a QAT search and every fine-tuning trains: seeded by its formats, on one
        thread, PyTorch's fused paths off. Returns the epochs trained."""
        with unfused(), one_thread():
            return self.train(candidate, repr(sorted(plan.items())), on_epoch)

    def train(self, model: nn.Module, identity: str, on_epoch: OnEpoch | None = None) -> int:
        """Train `model` in place; after each epoch `on_epoch(epochs_done)` may stop it.
        Returns the epochs trained. A NaN or infinite loss, or a model with nothing to train,
        is refused (ConfigError)."""
        s = self.settings
        seed = candidate_seed(s.seed, identity)
        gen = torch.Generator().manual_seed(seed)
        opt = make_optimizer(model, s)
        total = s.steps_per_epoch(self.rows) * s.epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(s, i, total))
        batches = s.total_batches(self.rows)
        # the global generators are left as they were: what ran before a candidate does not
        # change its training, and its training does not change what runs after it
        devices = [self.x.device] if self.x.device.type == "cuda" else []
        done = 0
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)  # dropout and any other randomness of the forward
            for done, steps in enumerate(self._epochs(gen, batches), start=1):
                model.train()
                for step, (xb, yb) in enumerate(steps):
                    self._step(model, opt, sched, (xb, yb), (done, step))
                self._flush(opt, sched)  # an epoch ends on a step: a ladder may stop here
                if on_epoch is not None and not on_epoch(done):
                    break
        model.eval()
        return done

    def _epochs(self, gen: torch.Generator, batches: int) -> Iterator[Iterator]:
        left = batches
        while left > 0:
            order = torch.randperm(self.rows, generator=gen)
            n = min(left, self.settings.steps_per_epoch(self.rows))
            left -= n
            yield self._batches(order, n)

    def _batches(self, order: torch.Tensor, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b = self.settings.batch_size
        for start in range(0, n * b, b):
            idx = order[start : start + b].to(self.x.device)
            if len(idx) < 2 and start > 0:
                continue  # BatchNorm cannot train on a batch of one
            yield self.x[idx], self.y[idx]

    def _step(
        self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
        batch: tuple[torch.Tensor, torch.Tensor], where: tuple[int, int],
    ) -> None:  # fmt: skip
        loss = self.loss_fn(model(batch[0]), batch[1])
        epoch, step = where
        if not torch.isfinite(loss):
            raise ConfigError(
                "learning_rate",
                f"made the training loss {float(loss.detach())} at epoch {epoch}, step {step + 1}: "
                "lower the learning rate (or check the training data and loss_fn)",
                self.settings.learning_rate,
            )
        (loss / self.settings.accumulation).backward()
        if (step + 1) % self.settings.accumulation == 0:
            self._flush(opt, sched)

    def _flush(self, opt: torch.optim.Optimizer, sched: Any) -> None:
        """An optimizer step for the gradients accumulated so far, if any."""
        if any(p.grad is not None for g in opt.param_groups for p in g["params"]):
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
