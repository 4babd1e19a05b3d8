"""The two caches of a search: activations by layer prefix, and metrics by candidate."""

from array import array
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, MutableMapping, Sequence

import torch


class TensorLRU:
    """Tensors by key, least recently used dropped first once `max_bytes` is exceeded.

    Holds the activations at layer boundaries, so a candidate that shares a prefix of layer
    formats with a recent one starts after that prefix. Entries are never modified in place.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def get(self, key: Hashable) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def __len__(self) -> int:
        return len(self._items)


class MetricsCache(MutableMapping[Hashable, dict[str, float]]):
    """Metrics by candidate key, stored as one float64 array per candidate.

    Reads return a new dict of every metric, so a caller cannot change what is cached; writes
    need every metric of `names` (a missing one is a KeyError). A dict per candidate would cost
    about five times the memory of the array, and a search may hold millions.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._rows: dict[Hashable, array] = {}

    def __getitem__(self, key: Hashable) -> dict[str, float]:
        return dict(zip(self.names, self._rows[key], strict=True))

    def __setitem__(self, key: Hashable, metrics: Mapping[str, float]) -> None:
        self._rows[key] = array("d", [float(metrics[name]) for name in self.names])

    def __delitem__(self, key: Hashable) -> None:
        del self._rows[key]

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
