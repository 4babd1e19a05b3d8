"""Every public name has a Google-style docstring that the API reference can render.

The docstrings are read with griffe's Google parser, the one mkdocstrings uses, so this
check and the docs site agree on what a section says. A function with parameters needs
`Args:` naming each (and nothing that is not in its signature), one that returns a value
needs `Returns:`, one whose own source raises an exception class needs `Raises:` naming it;
a dataclass documents its fields under `Attributes:` (or `Args:`).
"""

import ast
import functools
import logging
import textwrap
import types
from pathlib import Path

import griffe
import pytest

import bitscout

SRC = Path(__file__).resolve().parents[1] / "src"
_SELF = {"self", "cls"}


@functools.cache
def _package() -> griffe.Object:
    pkg = griffe.load("bitscout", search_paths=[str(SRC)], docstring_parser="google")
    assert isinstance(pkg, griffe.Object)
    return pkg


def _target(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    return obj.final_target if isinstance(obj, griffe.Alias) else obj


def _public_object(name: str) -> griffe.Object:
    """The definition behind `bitscout.<name>`, found where Python finds it."""
    value = getattr(bitscout, name)
    if isinstance(value, types.ModuleType):  # `bitscout.export`: a package whose call is run.export
        value = type(value).__call__
    path = f"{value.__module__}.{value.__qualname__}".removeprefix("bitscout.")
    return _target(_package()[path])


def _members(cls: griffe.Object) -> list[griffe.Object]:
    """The class's public members, inherited ones included when bitscout defines them."""
    out = []
    for name, member in cls.all_members.items():
        obj = _target(member)
        if not name.startswith("_") and obj.path.startswith("bitscout."):
            out.append(obj)
    return out


def _sections(obj: griffe.Object) -> dict[str, list[str]]:
    """Section kind -> the names (parameters, attributes) or annotations (raises) it lists."""
    if obj.docstring is None:
        return {}
    found: dict[str, list[str]] = {}
    for section in obj.docstring.parse("google"):
        kind = section.kind.value
        items = section.value if isinstance(section.value, list) else []
        names = [str(getattr(i, "name", "") or getattr(i, "annotation", "")) for i in items]
        if kind == "raises":
            names = [str(i.annotation).split(".")[-1] for i in items]
        found.setdefault(kind, []).extend(names)
    return found


def raised_classes(source: str) -> set[str]:
    """Exception classes a function's own source raises by name (`raise X(...)`, `raise X`)."""
    found = set()
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        name = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", "")
        if name[:1].isupper():  # `raise err` re-raises a variable: its class is not in sight
            found.add(name)
    return found


def function_problems(func: griffe.Object, extra: dict[str, list[str]] | None = None) -> list[str]:
    """What `func`'s docstring lacks; `extra` adds the sections of its class's docstring."""
    sections = _sections(func)
    for kind, names in (extra or {}).items():
        sections.setdefault(kind, []).extend(names)
    params = [p.name for p in func.parameters if p.name not in _SELF]
    documented = [n.lstrip("*") for n in sections.get("parameters", [])]
    problems = [f"Args lacks {p!r}" for p in params if p not in documented]
    problems += [f"Args names {n!r}, not a parameter" for n in documented if n not in params]
    returns = func.returns is not None and str(func.returns) != "None"
    if returns and "returns" not in sections and func.name != "__init__":
        problems.append("no Returns section")
    raised = raised_classes(func.source) - set(sections.get("raises", []))
    problems += [f"Raises lacks {name}" for name in sorted(raised)]
    return problems


def _dataclass_problems(cls: griffe.Object, sections: dict[str, list[str]]) -> list[str]:
    fields = [
        m.name
        for m in cls.members.values()
        if "instance-attribute" in m.labels and not m.name.startswith("_")
    ]
    documented = sections.get("attributes", []) + sections.get("parameters", [])
    problems = [f"Attributes lacks {f!r}" for f in fields if f not in documented]
    stale = [n for n in documented if n not in cls.all_members]
    return problems + [f"Attributes names {n!r}, not a field" for n in stale]


def problems_of(obj: griffe.Object) -> list[str]:
    """Every missing or stale part of `obj`'s docstring (and its public members')."""
    if obj.docstring is None:
        return ["no docstring"]
    if obj.is_function:
        return function_problems(obj)
    if not obj.is_class:
        return []
    sections = _sections(obj)
    if "dataclass" in obj.labels:
        problems = _dataclass_problems(obj, sections)
    else:
        init = obj.members.get("__init__")
        problems = function_problems(_target(init), sections) if init is not None else []
    for member in _members(obj):
        if member.docstring is None and (member.is_function or "property" in member.labels):
            problems.append(f"{member.name}: no docstring")
        elif member.is_function:
            problems += [f"{member.name}: {p}" for p in function_problems(member)]
    return problems


@pytest.mark.parametrize("name", bitscout.__all__)
def test_public_name_is_documented(name: str, caplog: pytest.LogCaptureFixture) -> None:
    obj = _public_object(name)
    with caplog.at_level(logging.WARNING, logger="griffe"):
        problems = problems_of(obj)
    # what griffe warns of while parsing, `mkdocs build --strict` counts as a failure
    problems += [r.getMessage() for r in caplog.records if r.name.startswith("griffe")]
    assert not problems, f"{obj.path} ({obj.filepath}):\n  " + "\n  ".join(problems)


BAD = '''
class Boom(Exception):
    """An error."""


def scale(x: float, factor: float = 2.0) -> float:
    """Scale a number.

    Args:
        x: The number.
        gone: A parameter that no longer exists.

    Returns:
        The scaled number.
    """
    if factor == 0:
        raise Boom("factor 0")
    return x * factor


def fine(x: float) -> float:
    """Halve a number.

    Args:
        x: The number.

    Returns:
        Half of it.

    Raises:
        Boom: When x is negative.
    """
    if x < 0:
        raise Boom(x)
    return x / 2
'''


def test_check_catches_a_bad_docstring() -> None:
    with griffe.temporary_visited_module(BAD, docstring_parser="google") as module:
        assert function_problems(module["fine"]) == []
        assert function_problems(module["scale"]) == [
            "Args lacks 'factor'",
            "Args names 'gone', not a parameter",
            "Raises lacks Boom",
        ]
        undocumented = module["Boom"]
        undocumented.docstring = None
        assert problems_of(undocumented) == ["no docstring"]


def test_raised_classes_reads_the_source() -> None:
    source = "def f(x):\n    try:\n        g()\n    except KeyError as err:\n        raise\n"
    source += "    if x:\n        raise errors.ConfigError('k', 'r', x) from None\n"
    source += "    raise err\n"
    assert raised_classes(source) == {"ConfigError"}
