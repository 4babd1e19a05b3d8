"""The two caches of a search: activations by layer prefix, and metrics by candidate."""

from array import array
from collections.abc import Hashable, Iterator, Mapping, MutableMapping, Sequence

import torch

from bitscout.evaluate.engine.candidates import Key
from bitscout.evaluate.overflow import Tally
from bitscout.quant.formats import NumberFormat

BoundaryKey = tuple[int, Key, NumberFormat | None]  # stage, formats before it, its data_in format


class BoundaryCache:
    """Activations at layer boundaries: the input of stage k for the formats of the stages
    before it, unquantized (data_in None) or quantized to a data_in format.

    Inputs of the first `pinned` stages and of the one after them are the same for every
    candidate up to their data_in format: they are kept for the whole search, one per format.
    Deeper ones are kept for the latest prefix only, one per stage and kind, which is all that
    consecutive candidates reuse; memory therefore stops growing after the first candidate.
    """

    def __init__(self, pinned: int) -> None:
        self.pinned = pinned
        self._kept: dict[BoundaryKey, torch.Tensor] = {}
        self._latest: dict[tuple[int, bool], tuple[BoundaryKey, torch.Tensor]] = {}
        # The overflow counted up to each kept entry (see `evaluate.overflow`), kept and
        # dropped with it.
        self._tallies: dict[BoundaryKey, Tally] = {}

    def get(self, key: BoundaryKey) -> torch.Tensor | None:
        if key[0] <= self.pinned:
            return self._kept.get(key)
        entry = self._latest.get((key[0], key[2] is None))
        return entry[1] if entry is not None and entry[0] == key else None

    def take(self, key: BoundaryKey) -> torch.Tensor | None:
        """Remove and return the tensor that putting `key` would replace, for its memory."""
        if key[0] <= self.pinned:
            return None
        entry = self._latest.pop((key[0], key[2] is None), None)
        if entry is None:
            return None
        self._tallies.pop(entry[0], None)
        return entry[1]

    def put(self, key: BoundaryKey, value: torch.Tensor) -> None:
        if key[0] <= self.pinned:
            self._kept[key] = value
            return
        old = self._latest.get((key[0], key[2] is None))
        if old is not None and old[0] != key:
            self._tallies.pop(old[0], None)
        self._latest[(key[0], key[2] is None)] = (key, value)

    def tally(self, key: BoundaryKey) -> Tally:
        """The overflow counted from the model's input up to entry `key` ({} if none)."""
        return self._tallies.get(key, {})

    def set_tally(self, key: BoundaryKey, tally: Tally) -> None:
        """Keep `tally` with entry `key`, which was just put."""
        self._tallies[key] = tally

    def __len__(self) -> int:
        return len(self._kept) + len(self._latest)

    @property
    def bytes(self) -> int:
        values = [*self._kept.values(), *(v for _, v in self._latest.values())]
        return sum(v.numel() * v.element_size() for v in values)


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
