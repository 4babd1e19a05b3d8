"""The definition of a measurement: what a resumed study must share with this search, or its
trials mean something else. Derived from the objects themselves (the space's every field, the
model's classes, code, state and plain attributes, the loss's and the user metrics' code), so
a setting added later is fingerprinted without being listed here.

Objective and constraints are left out on purpose: they rank measurements, they do not make
them, and the results recompute both for every trial of a resumed study."""

import dataclasses
import hashlib
import json
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bitscout.evaluate.metrics import METRICS, Metric
from bitscout.study.store.storage import DATA_KEY

if TYPE_CHECKING:
    from bitscout.quant.space import SearchSpace
    from bitscout.study.run import Job

PLAIN = (int, float, str, bool, type(None))
DEPTH = 4  # how far closures and functions held by functions are followed


def fingerprint(job: "Job", measured: Sequence[str]) -> dict[str, Any]:
    """Everything that defines one of `job`'s measurements of the metrics `measured`, in the
    order a difference is reported (settings before the data hash they produce)."""
    s = job.settings
    brute = s.name == "bruteforce"
    data = {**job.data_settings, "rows": job.data.rows, "sha256": job.data.sha256}
    found = {
        **job.identity,
        DATA_KEY: data,
        "checkpoint_sha256": state_digest(job.model),
        "strategy": s.name,
        "sampler": s.sampler if s.name == "optuna" else None,
        # workers sharing a study walk the same order and record the same way
        "order": [s.order, s.shuffle_seed if s.order != "index" else None] if brute else None,
        "chunked": bool(s.chunked),
        "space": space_fields(job.space),
        "loss_fn": None if job.loss_fn is None else code_digest(job.loss_fn),
        "metrics": {m.name: metric_digest(m) for m in users(job.metrics, measured)},
        "model_code": model_code(job.model),
        "train": _training(job),
    }
    return json.loads(json.dumps(found, default=str))  # as the store gives it back


def _training(job: "Job") -> dict[str, Any] | None:
    """How candidates are trained, and on what: every setting and the training rows."""
    s = job.settings
    if s.train is None:
        return None
    data = job.train_data
    rows = None if data is None else {"rows": data.rows, "sha256": data.sha256}
    ladder = None if s.fidelity is None else dataclasses.asdict(s.fidelity)
    return {**dataclasses.asdict(s.train), "data": rows, "fidelity": ladder}


def space_fields(space: "SearchSpace") -> dict[str, Any]:
    """Every field of every layer key, one-choice fields included (they change what is
    measured as much as the searched ones), and how layers are matched to keys."""
    fields = {f"{key}.{name}": choices for key, t in space.fields.items()
              for name, choices in t.items()}  # fmt: skip
    return {"by": space.by, **{k: _listed(v) for k, v in fields.items()}}


def _listed(choices: Any) -> Any:
    if isinstance(choices, Mapping):
        return {name: list(c) for name, c in choices.items()}
    return list(choices)


def users(extra: Mapping[str, Metric], measured: Sequence[str]) -> Iterable[Metric]:
    """The metrics whose code is the user's: given to this search, or registered by name
    (bitscout's own are the same code for the same bitscout)."""
    for name in measured:
        metric = extra.get(name) or METRICS.get(name)
        if name in extra or not getattr(metric.compute, "__module__", "").startswith("bitscout"):
            yield metric


def metric_digest(metric: Metric) -> str:
    """The metric's code, named after the user's function it wraps (`metrics=` and
    `register_metric` wrap it in one of bitscout's) so a refusal names that function."""
    digest = code_digest(metric.compute).rpartition(":")[2]
    cells = [c.cell_contents for c in getattr(metric.compute, "__closure__", None) or ()
             if _filled(c)]  # fmt: skip
    user = [f for f in cells if callable(f) and not _qualname(f).startswith("bitscout.")]
    return f"{_qualname(user[0] if user else metric.compute)}:{digest}"


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def state_digest(model: nn.Module) -> str:
    """The full float state: parameters and every buffer (non-persistent ones too, which
    state_dict leaves out), with their dtypes and shapes."""
    digest = hashlib.sha256()
    named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, tensor in sorted(named.items()):
        digest.update(name.encode())
        _tensor(digest, tensor)
    return digest.hexdigest()[:16]


def _tensor(digest: Any, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_code(model: nn.Module) -> dict[str, Any]:
    """Per submodule: its class, the code of the class's own methods (torch's classes are
    named only), its forward hooks and its plain attributes (what forward may read besides
    the weights: a scale, a flag, a mode)."""
    out: dict[str, Any] = {"torch": torch.__version__}
    for path, module in model.named_modules():
        cls = type(module)
        hooks = [*module._forward_pre_hooks.values(), *module._forward_hooks.values()]
        out[path or "."] = {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "code": _class_code(cls),
            "hooks": [code_digest(h) for h in hooks],
            "attributes": _attributes(module),
        }
    return out


def _class_code(cls: type) -> str | None:
    """A hash of the methods of `cls` and its bases outside torch (None: all torch's)."""
    digest = hashlib.sha256()
    own = [k for k in cls.__mro__ if not k.__module__.startswith(("torch", "builtins"))]
    for klass in own:
        for name, value in sorted(vars(klass).items()):
            fn = getattr(value, "__func__", value)  # static and class methods
            if isinstance(fn, types.FunctionType):
                digest.update(f"{klass.__qualname__}.{name}:{code_digest(fn)}".encode())
    return digest.hexdigest()[:16] if own else None


def _attributes(module: nn.Module) -> dict[str, Any]:
    """The module's own attributes that are plain values or tensors (not registered as
    parameters or buffers); `training` is left out: a search always evaluates."""
    found: dict[str, Any] = {}
    for name, value in sorted(vars(module).items()):
        if name == "training":
            continue
        plain = _plain(value)
        if plain is not None:
            found[name] = plain
    return found


def _plain(value: Any) -> Any:
    """`value` as a JSON-able identity when it is a plain value, a tensor or a sequence of
    them; None for anything else (modules, dicts of hooks, functions)."""
    if isinstance(value, PLAIN):
        return repr(value)
    if isinstance(value, torch.Tensor):
        digest = hashlib.sha256()
        _tensor(digest, value)
        return f"tensor:{digest.hexdigest()[:16]}"
    if isinstance(value, tuple | list) and all(isinstance(v, PLAIN) for v in value):
        return repr(value)
    return None


def code_digest(fn: Callable[..., Any] | Any, depth: int = DEPTH) -> str:
    """`fn`'s qualified name and a hash of what it computes: its code object (bytecode,
    constants recursively, the names it reads), its defaults, the values of its closure cells
    and of the plain globals it reads. A callable object is its class and plain attributes; a
    partial its function and arguments."""
    digest = hashlib.sha256()
    digest.update(_qualname(fn).encode())
    for part in _parts(fn, depth):
        digest.update(part.encode())
    return f"{_qualname(fn)}:{digest.hexdigest()[:16]}"


def _qualname(fn: Any) -> str:
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


def _parts(fn: Any, depth: int) -> Iterable[str]:
    fn = getattr(fn, "__func__", fn)  # a bound method: its function
    if isinstance(fn, types.FunctionType):
        yield _code(fn.__code__)
        yield repr([_value(v, depth) for v in fn.__defaults__ or ()])
        yield repr(sorted((k, _value(v, depth)) for k, v in (fn.__kwdefaults__ or {}).items()))
        for cell in fn.__closure__ or ():
            yield _value(cell.cell_contents, depth) if _filled(cell) else "<empty>"
        names = _names(fn.__code__)
        yield repr([(n, _plain(fn.__globals__[n])) for n in sorted(names)
                    if n in fn.__globals__ and _plain(fn.__globals__[n]) is not None])  # fmt: skip
    elif hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        yield _value(fn.func, depth)
        yield repr([_value(v, depth) for v in fn.args])
        yield repr(sorted((k, _value(v, depth)) for k, v in fn.keywords.items()))
    elif isinstance(fn, nn.Module):  # a loss module: its code, settings and tensors
        yield json.dumps(model_code(fn), sort_keys=True) + state_digest(fn)
    elif not isinstance(fn, types.BuiltinFunctionType | type):
        yield _class_code(type(fn)) or ""
        yield repr(_attributes_of(fn))


def _attributes_of(obj: Any) -> list[tuple[str, Any]]:
    return [(k, _plain(v)) for k, v in sorted(getattr(obj, "__dict__", {}).items())]


def _value(value: Any, depth: int) -> str:
    """A closure cell's or an argument's identity: plain values and tensors by value,
    functions by their code (to `depth`), anything else by its type."""
    plain = _plain(value)
    if plain is not None:
        return plain
    if callable(value) and depth > 0:
        return code_digest(value, depth - 1)
    return _qualname(type(value))


def _code(code: types.CodeType) -> str:
    """Bytecode, the names read and the constants, nested code objects (lambdas, inner
    functions, comprehensions) followed."""
    consts = [_const(c) for c in code.co_consts]
    raw = hashlib.sha256(code.co_code).hexdigest()
    return repr((raw, code.co_names, code.co_varnames, consts))


def _const(value: Any) -> str:
    """A constant the same in every process: a frozenset's repr follows string hashing,
    which Python seeds per process, so its members are sorted."""
    if isinstance(value, types.CodeType):
        return _code(value)
    if isinstance(value, frozenset):
        return f"frozenset({sorted(map(_const, value))})"
    if isinstance(value, tuple):
        return f"({', '.join(map(_const, value))})"
    return repr(value)


def _names(code: types.CodeType) -> set[str]:
    """Global names read by `code` and the code nested in it."""
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _names(const)
    return found
