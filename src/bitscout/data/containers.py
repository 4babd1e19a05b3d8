"""Validation data as the evaluator holds it: the user's rows and targets, as given, in a
private copy that a model or metric editing its input in place cannot change unnoticed.

Pairs of arrays or tensors, a `torch.utils.data.Dataset` or a `DataLoader` (reading its rows
in order) are materialized once as two tensors when they fit `max_bytes`; otherwise they are
read batch by batch for every candidate (the plain path), with the same metrics.
"""

import copy
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, SequentialSampler

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


def _update(h: "hashlib._Hash", x: torch.Tensor, y: torch.Tensor) -> None:
    for t in (x, y):
        h.update(f"{t.dtype}{tuple(t.shape[1:])}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())


def digest(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """SHA-256 of the rows and targets, in order: the data's identity in a study."""
    h = hashlib.sha256()
    for x, y in batches:
        _update(h, x, y)
    return h.hexdigest()


Labels = tuple[int, int] | None  # the smallest and largest class index; None: not classes


def label_range(y: torch.Tensor, before: Labels = None) -> Labels:
    """The range of integer class-index targets `y` [n], widening `before`; None for others."""
    if y.is_floating_point() or y.is_complex() or y.dim() != 1 or not len(y):
        return before
    lo, hi = int(y.min()), int(y.max())
    return (lo, hi) if before is None else (min(lo, before[0]), max(hi, before[1]))


def _own(t: torch.Tensor, caller: torch.Tensor) -> torch.Tensor:
    """`t`, copied when it shares memory with the caller's tensor: a model that edits its input
    in place must not edit the caller's data."""
    shared = t.untyped_storage().data_ptr() == caller.untyped_storage().data_ptr()
    return t.clone() if shared else t


def _copy_given(value: Any) -> Any:
    """A private copy of an (x, y) pair in the form it was given (arrays, tensors, lists)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*map(_copy_given, value))
    if isinstance(value, tuple | list):
        return type(value)(map(_copy_given, value))
    return copy.deepcopy(value)


@dataclass
class EvalData:
    """Validation rows and targets: held as tensors (`x`, `y`) or read from `loader`.

    Held rows are the evaluator's own copy, never the caller's tensors. `sha256` identifies
    them as prepared; `changed` says whether a model or metric has edited them since."""

    x: torch.Tensor | None
    y: torch.Tensor | None
    loader: Iterable | None
    rows: int
    sha256: str
    source: Any  # what the user passed; user metrics get `for_metrics()`, never this
    dtype: torch.dtype
    device: torch.device
    labels: Labels = None
    _given: Any = field(default=None, init=False, repr=False)
    _given_sha256: str | None = field(default=None, init=False, repr=False)

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
            yield _own(cast_inputs(x, self.dtype).to(self.device), x), y.to(self.device)

    def sample(self) -> torch.Tensor:
        """One row, as a batch of one, for profiling the model."""
        x, _ = next(iter(self.batches()))
        return x[:1]

    def for_metrics(self) -> Any:
        """What a user metric receives: a private copy of the (x, y) pair in the form it was
        given (made once), or the Dataset or DataLoader as given."""
        if self._given_sha256 is None:
            pairs = isinstance(self.source, tuple | list)
            self._given = _copy_given(self.source) if pairs else self.source
            self._given_sha256 = self._given_digest()
        return self._given

    def _given_digest(self) -> str:
        if isinstance(self._given, tuple | list):
            return digest([pair(self._given, "data")])
        return digest(map(_batch_pair, _loader(self._given)))

    def changed(self) -> list[str]:
        """What differs from the data as prepared: "rows" (what the model is run on) and
        "metric data" (what user metrics received)."""
        now = digest(self.batches() if self.held else map(_batch_pair, self.loader or ()))
        found = [] if now == self.sha256 else ["rows"]
        if self._given_sha256 is not None and self._given_digest() != self._given_sha256:
            found.append("metric data")
        return found


def check_classes(labels: Labels, outputs: tuple[int, ...], key: str = "data") -> None:
    """Class-index targets within the model's outputs [classes]: -1 would silently be the
    last class of accuracy's and cross-entropy's batched forms."""
    if labels is None or len(outputs) != 1:
        return
    (lo, hi), width = labels, outputs[0]
    if lo < 0 or hi >= width:
        rule = (f"targets must be class indices in 0..{width - 1} (the model's output width "
                f"is {width}), got labels {lo}..{hi}")  # fmt: skip
        raise ConfigError(key, rule)


def check_fits(model: nn.Module, x: torch.Tensor, key: str = "data") -> tuple[int, ...]:
    """Run `model` on a copy of the first row of `x` (eval mode, no gradients) and return the
    shape of an output row: rows it cannot take (another feature count, a user's dataset for
    another model) are one ConfigError naming their shape, not a traceback from deep inside
    its forward."""
    training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x[:1].clone())
    except ConfigError:
        raise
    except Exception as err:
        shown = f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]
        rule = f"the model cannot run on rows of shape {tuple(x.shape[1:])} ({x.dtype}): {shown}"
        raise ConfigError(key, rule) from err
    finally:
        model.train(training)
    return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()


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
        _check_order(data)
        return data
    return DataLoader(data, batch_size=STREAM_BATCH, shuffle=False)


def _check_order(loader: DataLoader) -> None:
    """Every candidate must see the same rows: a DataLoader that draws them (shuffle, a
    weighted or custom sampler) would give each its own."""
    if isinstance(loader.dataset, IterableDataset):
        return  # the iterable's own order; its sampler is a placeholder
    batches = loader.batch_sampler
    drawn = [loader.sampler, getattr(batches, "sampler", loader.sampler)]
    odd = next((s for s in drawn if type(s) is not SequentialSampler), None)
    if odd is None and batches is not None and type(batches) is not BatchSampler:
        odd = batches
    if odd is not None:
        rule = (f"a DataLoader must read the rows in order, the same for every candidate: its "
                f"{type(odd).__name__} draws them; pass shuffle=False and no sampler")  # fmt: skip
        raise ConfigError("data", rule)


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


def _scan(loader: DataLoader, max_bytes: int) -> tuple[int, str, Labels]:
    """Rows, digest and class range of data read batch by batch; an IterableDataset must say
    how long it is (len), or it may never end."""
    if isinstance(loader.dataset, IterableDataset) and not hasattr(loader.dataset, "__len__"):
        rule = (
            f"an IterableDataset without __len__ might never end: it must fit the "
            f"memory budget ({max_bytes} bytes); give it a __len__ or raise max_data_bytes"
        )
        raise ConfigError("data", rule, type(loader.dataset).__name__)
    h, rows, labels = hashlib.sha256(), 0, None
    for batch in loader:
        x, y = _batch_pair(batch)
        _update(h, x, y)
        rows, labels = rows + len(y), label_range(y, labels)
    return rows, h.hexdigest(), labels


def prepare(
    data: Any,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    max_bytes: int = MAX_BYTES,
) -> EvalData:
    """The evaluator's view of `data`: an (x, y) pair, a Dataset or a DataLoader; held rows
    are a private copy."""
    device = check_device(device)
    if isinstance(data, Dataset | DataLoader | IterableDataset):
        loader = _loader(data)
        gathered = _gather(loader, max_bytes)
        if gathered is None:
            rows, sha256, labels = _scan(loader, max_bytes)
            return EvalData(None, None, loader, rows, sha256, data, dtype, device, labels)
        x, y = gathered  # concatenated: the evaluator's own already
        check_pair(x, y, "data")
        held_x, held_y = cast_inputs(x, dtype).to(device), y.to(device)
    else:
        x, y = pair(data, "data")
        held_x, held_y = _own(cast_inputs(x, dtype).to(device), x), _own(y.to(device), y)
    return EvalData(held_x, held_y, None, len(y), digest([(held_x, held_y)]), data, dtype,
                    device, label_range(y))  # fmt: skip
