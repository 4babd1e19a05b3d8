"""Candidates as tuples of small format ids: cheap to resolve, hash and keep by the million."""

from collections.abc import Mapping

from bitscout.quant.layers import LayerQuant
from bitscout.quant.plan import DEFAULT, governing_keys
from bitscout.quant.space import Choice, SearchSpace
from bitscout.quant.tables import parse_layer_config

Key = tuple[int, ...]  # a format id per quantizable layer, in the space's layer order


class Resolver:
    """Resolves configs of one space to format ids, as `SearchSpace.resolved` would.

    Each layer key's table is parsed once per distinct set of values, not once per candidate,
    and equal formats get one id, so configs that quantize alike (say, several widths under
    `name = "NA"`) share a key.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.paths = tuple(space.types)
        # The plan key that configures each layer: by name every layer has its own key, by
        # type the key is the layer's type when the seed has a table for it, else `default`.
        self._governing = tuple(
            k or DEFAULT for k in governing_keys(space.types, space.fields, space.by).values()
        )
        searched = {d.layer for d in space.dimensions}
        # Layers whose plan key no dimension touches: one format in every candidate.
        self.fixed = frozenset(
            p for p, k in zip(self.paths, self._governing, strict=True) if k not in searched
        )
        self._parsed: dict[tuple[str, tuple], int] = {}
        self._ids: dict[LayerQuant | None, int] = {}
        self.formats: list[LayerQuant | None] = []

    def key(self, config: Mapping[str, Choice]) -> Key:
        ids = {}
        for layer in self.space.layers:
            table = layer.table_for(self.space.values_of(layer, config))
            ids[layer.key] = self._parse(layer.key, table)
        return tuple(ids[k] for k in self._governing)

    def plan(self, key: Key) -> dict[str, LayerQuant | None]:
        """The formats per layer path of candidate `key`."""
        return {path: self.formats[i] for path, i in zip(self.paths, key, strict=True)}

    def _parse(self, layer_key: str, table: Mapping[str, Choice]) -> int:
        memo = (layer_key, tuple(table.items()))
        if memo not in self._parsed:
            fmt = parse_layer_config(table, layer_key)
            if fmt not in self._ids:
                self._ids[fmt] = len(self.formats)
                self.formats.append(fmt)
            self._parsed[memo] = self._ids[fmt]
        return self._parsed[memo]
