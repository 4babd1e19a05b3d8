"""Plug-ins: a model or dataset named in a config as `path/to/file.py:callable` or
`package.module:callable`, loaded and called with the config's options."""

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bitscout.errors import ConfigError


def is_spec(name: str) -> bool:
    """Whether a `model`/`dataset` value names a plug-in rather than a registered name."""
    return ":" in name


def resolve_spec(spec: str, base: Path | None) -> str:
    """`spec` with a relative file path made absolute against `base` (the config's folder)."""
    target, _, attr = spec.rpartition(":")
    if base is None or not target.endswith(".py") or Path(target).is_absolute():
        return spec
    return f"{(base / target).resolve()}:{attr}"


def display_name(name: str) -> str:
    """How messages show a model or dataset: a plug-in file by its file name."""
    target, _, attr = name.rpartition(":")
    return f"{Path(target).name}:{attr}" if is_spec(name) and target.endswith(".py") else name


def _module_from_file(path: Path, key: str, spec: str) -> Any:
    if not path.is_file():
        raise ConfigError(key, f"plug-in {spec!r}: no such file {str(path)!r}")
    # One module per file, named after its path, so two plug-ins called net.py don't clash and
    # loading the same file twice gives the same module.
    name = f"bitscout_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(key, f"plug-in {spec!r}: {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_callable(spec: str, key: str) -> Callable[..., Any]:
    """The callable that `spec` names; any failure is a ConfigError naming `key` and `spec`."""
    target, _, attr = spec.rpartition(":")
    shown = display_name(spec)
    if not target or not attr:
        rule = f"plug-in {spec!r} must look like 'file.py:callable' or 'package.module:callable'"
        raise ConfigError(key, rule)
    try:
        if target.endswith(".py"):
            module = _module_from_file(Path(target), key, spec)
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except (Exception, SystemExit) as err:
        raise ConfigError(key, f"plug-in {shown!r} does not import: {_one_line(err)}") from err
    if not hasattr(module, attr):
        raise ConfigError(key, f"plug-in {shown!r}: its module has no attribute {attr!r}")
    obj = getattr(module, attr)
    if not callable(obj):
        raise ConfigError(key, f"plug-in {shown!r}: {attr!r} is not callable")
    return obj


def call_plugin(fn: Callable[..., Any], options: Mapping[str, Any], spec: str, key: str) -> Any:
    """`fn(**options)`; options it does not take, and anything it raises, are ConfigErrors."""
    try:
        bound = inspect.signature(fn)
    except (TypeError, ValueError):
        bound = None
    if bound is not None:
        takes_any = any(p.kind is p.VAR_KEYWORD for p in bound.parameters.values())
        unknown = [o for o in options if o not in bound.parameters and not takes_any]
        if unknown:
            known = ", ".join(bound.parameters) or "none"
            rule = f"plug-in {display_name(spec)!r} takes no option {unknown[0]!r} (its "
            rule += f"parameters: {known})"
            raise ConfigError(f"{key}_options.{unknown[0]}", rule)
    try:
        return fn(**options)
    except ConfigError:
        raise
    except (Exception, SystemExit) as err:  # a plug-in's sys.exit must not end bitscout
        raise ConfigError(key, f"plug-in {display_name(spec)!r} raised {_one_line(err)}") from err


def _one_line(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"SystemExit: it called sys.exit({err.code!r})"
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]
