"""One layer key's candidates: for each format in its `name` list, the choices of the fields
that format takes, and (in a mixed-format key) only the combinations that are valid formats.

A field's choices are one list for every format that takes it, or a table of lists keyed by
format name (`weight_width = {integer = [4, 6, 8], mxint = [8]}`). Where a key lists several
formats, a choice one format cannot take (mxint at width 4) and a combination that is no
format (a minifloat with no mantissa bits) are skipped and counted, not refused.
"""

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from bitscout.errors import ConfigError
from bitscout.quant.catalog import FORMATS, TENSORS, field_names, field_spec
from bitscout.quant.formats import NO_FORMAT, NumberFormat
from bitscout.quant.tables import tensor_format

Choice = int | str | bool
Choices = tuple[Choice, ...] | Mapping[str, tuple[Choice, ...]]  # one list, or one per format
MAX_COMBINATIONS = 100_000  # per format, when checking that every combination is valid


@dataclass(frozen=True)
class Dimension:
    """One searched field of one layer key, named `<layer>/<field>`; `formats` lists the
    formats under which it is searched (empty: always)."""

    layer: str
    field: str
    choices: tuple[Choice, ...]
    formats: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.field}"


def choices_for(choices: Choices, name: str) -> tuple[Choice, ...] | None:
    """`name`'s choices of a field (None: a per-format table without `name`)."""
    if isinstance(choices, Mapping):
        return choices.get(name)
    return tuple(choices)


@dataclass(frozen=True)
class FormatChoices:
    """One format's candidates in a layer key. `valid` lists the searched values of each
    candidate when some combinations were skipped (None: every combination is valid)."""

    key: str
    name: str
    fields: Mapping[str, tuple[Choice, ...]]  # the format's fields in the table -> choices
    valid: tuple[tuple[Choice, ...], ...] | None = None
    skipped: int = 0
    example: str = ""  # one skipped candidate and why

    @functools.cached_property
    def searched(self) -> tuple[str, ...]:
        return tuple(f for f, c in self.fields.items() if len(c) > 1)

    @functools.cached_property
    def count(self) -> int:
        if self.valid is not None:
            return len(self.valid)
        return math.prod(len(self.fields[f]) for f in self.searched)

    @functools.cached_property
    def _positions(self) -> dict[tuple[Choice, ...], int]:
        return {combo: i for i, combo in enumerate(self.valid or ())}

    def values(self, index: int) -> dict[str, Choice]:
        """Candidate `index` of this format: its searched fields (last fastest)."""
        searched = self.searched
        if self.valid is not None:
            return {"name": self.name, **dict(zip(searched, self.valid[index], strict=True))}
        digits: dict[str, Choice] = {}
        for f in reversed(searched):
            index, digit = divmod(index, len(self.fields[f]))
            digits[f] = self.fields[f][digit]
        return {"name": self.name, **{f: digits[f] for f in searched}}

    def index(self, values: Mapping[str, Choice]) -> int:
        index = 0
        for f in self.searched:
            choices, got = self.fields[f], values.get(f)
            if got not in choices:
                raise ValueError(f"{self.key}/{f}: {got!r} is not a choice of {self.name}")
            index = index * len(choices) + choices.index(got)
        if self.valid is None:
            return index
        combo = tuple(values.get(f) for f in self.searched)
        if combo not in self._positions:
            raise ValueError(f"{self.key}: {self._shown(values)} is no valid candidate")
        return self._positions[combo]  # type: ignore[index]

    def table(self, values: Mapping[str, Choice]) -> dict[str, Choice]:
        """The MASE config table of this format: searched values, else first choices."""
        return {"name": self.name, **{f: values.get(f, c[0]) for f, c in self.fields.items()}}

    def _shown(self, values: Mapping[str, Choice]) -> str:
        shown = ", ".join(f"{f} = {values[f]!r}" for f in self.searched if f in values)
        return f"{self.name} with {shown}" if shown else self.name


def _format_choices(
    key: str, name: str, table: Mapping[str, Choices], mixed: bool
) -> FormatChoices:
    own = [] if name == NO_FORMAT else field_names(FORMATS.get(name))
    given = {f: choices_for(c, name) for f, c in table.items() if f in own}
    fields = {f: c for f, c in given.items() if c is not None}
    fc = FormatChoices(key, name, fields)
    if not mixed or name == NO_FORMAT:
        return fc
    cls, example = FORMATS.get(name), ""
    kept = {}
    for f, choices in fields.items():  # a shared list's choices this format cannot take
        spec = field_spec(cls, f)
        kept[f] = tuple(c for c in choices if spec is None or spec.check(c))
        if len(kept[f]) < len(choices) and not example:
            bad = next(c for c in choices if c not in kept[f])
            example = f"{name} with {f} = {bad!r} ({f} must be {spec.rule if spec else ''})"
    raw = math.prod(len(c) for c in fields.values())
    fc = FormatChoices(key, name, kept, None, raw - math.prod(len(c) for c in kept.values()))
    return _combinations(fc, example)


def _combinations(fc: FormatChoices, example: str) -> FormatChoices:
    """`fc` with only its candidates that are valid formats, where there are few enough to
    check (more are checked per tensor when the space is parsed)."""
    if any(not c for c in fc.fields.values()):  # a field none of whose choices it takes
        return FormatChoices(fc.key, fc.name, fc.fields, (), fc.skipped, example)
    if math.prod(len(c) for c in fc.fields.values()) > MAX_COMBINATIONS:
        return dataclasses.replace(fc, example=example)
    cls, memo = FORMATS.get(fc.name), dict[tuple, str | None]()
    valid, skipped = [], fc.skipped
    for combo in itertools.product(*(fc.fields[f] for f in fc.searched)):
        values = fc.table(dict(zip(fc.searched, combo, strict=True)))
        error = _error(cls, values, memo)
        if error is None:
            valid.append(combo)
            continue
        skipped += 1
        example = example or f"{fc._shown(values)} ({error})"
    if skipped == 0:
        return fc
    return FormatChoices(fc.key, fc.name, fc.fields, tuple(valid), skipped, example)


def _error(
    cls: type[NumberFormat], values: Mapping[str, Choice], memo: dict[tuple, str | None]
) -> str | None:
    """Why the layer table `values` of format `cls` is no valid format, or None."""
    shared = {f.suffix: values[f.suffix] for f in cls.FIELDS if f.layer and f.suffix in values}
    for tensor in TENSORS:
        parts = tuple(sorted((k, v) for k, v in values.items() if k.startswith(f"{tensor}_")))
        memo_key = (tensor, parts, tuple(sorted(shared.items())))
        if memo_key not in memo:
            try:
                tensor_format(cls, values, tensor, shared, "")
                memo[memo_key] = None
            except ConfigError as err:
                memo[memo_key] = f"{err.key.lstrip('.')} {err.rule}"
        if memo[memo_key] is not None:
            return memo[memo_key]
    return None


@dataclass(frozen=True)
class LayerChoices:
    """One layer key's candidates: per format (in `name` order) the fields searched under it.
    `table` holds each field's choices over every format (a dimension's choices)."""

    key: str
    table: Mapping[str, tuple[Choice, ...]]
    formats: tuple[FormatChoices, ...] = field(default=())

    @classmethod
    def of(cls, key: str, table: Mapping[str, Choices]) -> "LayerChoices":
        names = tuple(str(n) for n in table["name"])
        mixed = len(names) > 1
        formats = tuple(_format_choices(key, n, table, mixed) for n in names)
        union: dict[str, tuple[Choice, ...]] = {"name": names}
        for f, given in table.items():
            if f != "name":
                order = given if not isinstance(given, Mapping) else sum(given.values(), ())
                kept = [c for c in order if any(c in fc.fields.get(f, ()) for fc in formats)]
                union[f] = tuple(dict.fromkeys(kept)) or tuple(order)
        return cls(key, union, formats)

    def format(self, name: object) -> FormatChoices:
        return self._offset(name)[1]

    @functools.cached_property
    def _offsets(self) -> dict[object, tuple[int, FormatChoices]]:
        """Format name -> (its first candidate's index in this key, its candidates)."""
        starts = itertools.accumulate((fc.count for fc in self.formats), initial=0)
        return {fc.name: (start, fc) for fc, start in zip(self.formats, starts, strict=False)}

    def _offset(self, name: object) -> tuple[int, FormatChoices]:
        if name not in self._offsets:
            raise ValueError(f"{self.key}/name: {name!r} is not a choice")
        return self._offsets[name]

    @property
    def size(self) -> int:
        return sum(fc.count for fc in self.formats)

    @property
    def raw_size(self) -> int:
        """Candidates before skipping the invalid ones."""
        return self.size + sum(fc.skipped for fc in self.formats)

    def values(self, index: int) -> dict[str, Choice]:
        """Candidate `index` of this key: its format and searched fields (last fastest)."""
        for fc in self.formats:
            if index < fc.count:
                return fc.values(index)
            index -= fc.count
        raise IndexError(index)

    def index(self, values: Mapping[str, Choice]) -> int:
        offset, fc = self._offset(values.get("name", self.table["name"][0]))
        return offset + fc.index(values)

    def allows(self, values: Mapping[str, Choice]) -> bool:
        """Whether the format and fields in `values` (the rest at first choices) make a
        candidate: one a mixed-format key did not skip."""
        try:
            self.index(self.table_for(values))
        except ValueError:
            return False
        return True

    def table_for(self, values: Mapping[str, Choice]) -> dict[str, Choice]:
        """The MASE config table of the chosen format: searched values, else first choices."""
        return self.format(values.get("name", self.table["name"][0])).table(values)

    def dimensions(self) -> Iterator[Dimension]:
        return iter(self._dimensions)

    @functools.cached_property
    def _dimensions(self) -> tuple[Dimension, ...]:
        return tuple(self._dimension_list())

    def _dimension_list(self) -> Iterator[Dimension]:
        mixed = len(self.formats) > 1
        if mixed:
            yield Dimension(self.key, "name", self.table["name"])
        for f, choices in self.table.items():
            users = tuple(fc.name for fc in self.formats if f in fc.searched)
            if f != "name" and users:
                yield Dimension(self.key, f, choices, users if mixed else ())


def skipped_note(layers: Sequence[LayerChoices], skipped: int, total: int) -> str | None:
    """One line naming what a space skipped, or None when it skipped nothing."""
    if skipped == 0:
        return None
    parts = [f"{lc.key} {fc.name}: {fc.skipped} (e.g. {fc.example})"
             for lc in layers for fc in lc.formats if fc.skipped]  # fmt: skip
    return (f"skipped {skipped} of {total} candidates that are no valid format: "
            f"{'; '.join(parts)}")  # fmt: skip
