"""Validation data as the evaluator holds it: the user's own, used exactly as given.

Pairs of arrays or tensors, a `torch.utils.data.Dataset` or a `DataLoader` are materialized
once as two tensors when they fit `max_bytes`; otherwise they are read batch by batch for
every candidate (the plain path), with the same metrics.
"""

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler

from bitscout.errors import ConfigError

MAX_BYTES = 2**30  # validation data held in memory up to this size (x and y together)
STREAM_BATCH = 1024


def as_tensor(value: Any, key: str) -> torch.Tensor:
    """A NumPy array, a tensor or a nested list as a tensor (on the CPU, sharing memory)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(key, f"must be an array or tensor ({err})") from err
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ConfigError(key, f"must hold numbers, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def check_pair(x: torch.Tensor, y: torch.Tensor, key: str) -> None:
    """Rows of `x` and targets `y` that a search can evaluate."""
    if x.dim() == 0 or len(x) == 0:
        raise ConfigError(key, f"needs at least one row, got x of shape {tuple(x.shape)}")
    if y.dim() == 0 or len(y) != len(x):
        rule = f"x and y must have the same number of rows, got {len(x)} and {tuple(y.shape)}"
        raise ConfigError(key, rule)
    for name, t in (("x", x), ("y", y)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).reshape(len(t), -1).any(dim=1).sum())
            raise ConfigError(key, f"{name} holds NaN or infinite values in {bad} rows")


def pair(value: Any, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An `(x, y)` pair of arrays or tensors, checked."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigError(key, "must be an (x, y) pair of arrays or tensors", type(value).__name__)
    x, y = as_tensor(value[0], f"{key} x"), as_tensor(value[1], f"{key} y")
    check_pair(x, y, key)
    return x, y


def cast_inputs(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floating inputs in the model's floating dtype (NumPy gives float64); others as given."""
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


def digest(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """SHA-256 of the rows and targets, in order: the data's identity in a study."""
    h = hashlib.sha256()
    for x, y in batches:
        for t in (x, y):
            h.update(f"{t.dtype}{tuple(t.shape[1:])}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class EvalData:
    """Validation rows and targets: held as tensors (`x`, `y`) or read from `loader`."""

    x: torch.Tensor | None
    y: torch.Tensor | None
    loader: Iterable | None
    rows: int
    sha256: str
    source: Any  # what the user passed: given to user metrics as it is
    dtype: torch.dtype
    device: torch.device

    @property
    def held(self) -> bool:
        return self.x is not None

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The data in batches on the evaluation device (one batch when held)."""
        if self.x is not None and self.y is not None:
            yield self.x, self.y
            return
        for batch in self.loader or ():
            x, y = _batch_pair(batch)
            yield cast_inputs(x, self.dtype).to(self.device), y.to(self.device)

    def sample(self) -> torch.Tensor:
        """One row, as a batch of one, for profiling the model."""
        x, _ = next(iter(self.batches()))
        return x[:1]


def check_device(device: torch.device | str) -> torch.device:
    """`device` as a torch.device that this machine has."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError("device", f"is not a torch device ({err})", str(device)) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA is not available on this machine", str(device))
    return device


def _batch_pair(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise ConfigError("data", "batches must be (x, y) pairs", type(batch).__name__)
    return as_tensor(batch[0], "data x"), as_tensor(batch[1], "data y")


def _loader(data: Dataset | DataLoader) -> DataLoader:
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise ConfigError("data", "a DataLoader that shuffles: pass shuffle=False")
        return data
    return DataLoader(data, batch_size=STREAM_BATCH, shuffle=False)


def _gather(loader: DataLoader, max_bytes: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """All batches as two tensors, or None once they pass `max_bytes`."""
    xs, ys, size = [], [], 0
    for batch in loader:
        x, y = _batch_pair(batch)
        size += x.numel() * x.element_size() + y.numel() * y.element_size()
        if size > max_bytes:
            return None
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ConfigError("data", "holds no rows")
    return torch.cat(xs), torch.cat(ys)


def prepare(
    data: Any,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    max_bytes: int = MAX_BYTES,
) -> EvalData:
    """The evaluator's view of `data`: an (x, y) pair, a Dataset or a DataLoader."""
    device = check_device(device)
    if isinstance(data, Dataset | DataLoader | IterableDataset):
        loader = _loader(data)
        gathered = _gather(loader, max_bytes)
        if gathered is None:
            rows = sum(len(_batch_pair(b)[1]) for b in loader)
            return EvalData(None, None, loader, rows, digest(map(_batch_pair, loader)), data,
                            dtype, device)  # fmt: skip
        x, y = gathered
        check_pair(x, y, "data")
    else:
        x, y = pair(data, "data")
    x = cast_inputs(x, dtype)
    return EvalData(x.to(device), y.to(device), None, len(y), digest([(x, y)]), data, dtype, device)
