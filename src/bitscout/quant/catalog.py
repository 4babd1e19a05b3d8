"""Every number format, registered: import `FORMATS` from here (not from `formats`) so that
the formats defined in other modules are in it. A new format is one class in one module,
decorated with `register_format`, plus that module's import below."""

from bitscout.quant import binary, blocks, floats  # noqa: F401 - each registers its formats
from bitscout.quant.formats import FORMATS, NO_FORMAT, Field, Integer, NumberFormat

TENSORS = ("data_in", "weight", "bias")
DATAPATH = ("accum", "result")  # the hardware's accumulator and result types (integer only)


def format_names() -> list[str]:
    """What `name` may be: every registered format, or "NA" for float."""
    return [*FORMATS.names(), NO_FORMAT]


def tensors_of(cls: type[NumberFormat]) -> tuple[str, ...]:
    """The tensors a layer table of `cls` may type: the datapath's too for fixed point."""
    return TENSORS + DATAPATH if cls is Integer else TENSORS


def field_names(cls: type[NumberFormat]) -> list[str]:
    """The TOML fields of a layer table quantized with `cls`, in a stable order. A layer-wide
    field (`rounding`) may also be given per tensor (`accum_overflow`), overriding it there."""
    tensor = [f for f in cls.FIELDS if not f.layer]
    layer = [f for f in cls.FIELDS if f.layer]
    names = [f"{t}_{f.suffix}" for t in TENSORS for f in tensor]
    names += [f.suffix for f in layer]
    if cls is Integer:
        names += [f"{t}_{part}" for t in DATAPATH for part in ("width", "frac_width")]
    names += [f"{t}_{f.suffix}" for t in tensors_of(cls) for f in layer]
    return names


def field_spec(cls: type[NumberFormat], name: str) -> Field | None:
    """The Field behind TOML field `name` of format `cls` (None: not one of its fields)."""
    for f in cls.FIELDS:
        if (f.layer and name == f.suffix) or any(
            name == f"{t}_{f.suffix}" for t in tensors_of(cls)
        ):
            return f
    return None


def all_field_names() -> list[str]:
    """Every field of every format (a layer table may hold any of them)."""
    seen = {"name": None}
    for name in FORMATS.names():
        seen.update(dict.fromkeys(field_names(FORMATS.get(name))))
    return list(seen)
