"""Whether a model's forward is module calls alone, as its fx graph shows it.

torch.fx records the tensor operations of one run of `forward` on proxies; Python that does
not touch a tensor leaves no trace. A wrapper whose forward says `if self.flag: return out *
nan` is traced with the flag as it is when traced, so its graph can be a clean chain of module
calls while the model computes something else once quantized. The fast engine therefore runs
a model only when the code its trace went through has no control flow (no branch, loop, `try`
or `with`) and no module carries a forward hook (which neither the trace nor the engine
runs); PyTorch's own modules are trusted as they are documented.
"""

import dis
import inspect
import os
from collections.abc import Callable, Iterator
from types import CodeType, FunctionType
from typing import Any

import torch
from torch import fx, nn
from torch.nn.modules import module as torch_module

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)


class RecordingTracer(fx.Tracer):
    """fx's default tracer that also notes each module whose forward it traced through (the
    modules it did not keep as one call)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered: list[nn.Module] = []

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict[str, Any]
    ) -> Any:
        if not self.is_leaf_module(m, self.path_of_module(m)):
            self.entered.append(m)
        return super().call_module(m, forward, args, kwargs)


def hidden_logic(model: nn.Module, entered: list[nn.Module]) -> str | None:
    """Why the trace of `model` (which went through the forwards of `entered` besides the
    model's own) may not be what it computes, or None."""
    hooked = next((p for p, m in model.named_modules() if _hooks(m)), None)
    if hooked is not None or _global_hooks():
        where = f"module {hooked!r}" if hooked is not None else "every module (a global hook)"
        return f"a forward hook on {where}, which the fast engine would not run"
    seen: set[CodeType] = set()
    for module in dict.fromkeys([model, *entered]):
        found = _logic_in(type(module).forward, type(module), seen)
        if found is not None:
            return f"{found} has Python control flow, which a trace cannot see"
    return None


def _hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _global_hooks() -> bool:
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def _logic_in(fn: Any, owner: type, seen: set[CodeType]) -> str | None:
    """The first function reachable from `fn` (itself, the same class's methods and the
    module-level functions it names, functions in its closure) whose code branches."""
    fn = inspect.unwrap(fn) if callable(fn) else fn
    code = getattr(fn, "__code__", None)
    if not isinstance(code, CodeType) or code in seen or code.co_filename.startswith(_TORCH_DIR):
        return None
    seen.add(code)
    line = _branch_line(code)
    if line is not None:
        return f"{fn.__qualname__} ({os.path.basename(code.co_filename)}:{line})"
    for callee in _callees(fn, code, owner):
        found = _logic_in(callee, owner, seen)
        if found is not None:
            return found
    return None


def _codes(code: CodeType) -> Iterator[CodeType]:
    """`code` and the code of the functions, lambdas and comprehensions defined in it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)


def _branch_line(code: CodeType) -> int | None:
    """The line of the first branch, loop, `try` or `with` in `code` (or nested code)."""
    for part in _codes(code):
        if part.co_exceptiontable:  # try/except, with: a handler the trace never took
            return part.co_firstlineno
        for ins in dis.get_instructions(part):
            if ins.opcode in _JUMPS:
                return ins.positions.lineno if ins.positions else part.co_firstlineno
    return None


def _callees(fn: Any, code: CodeType, owner: type) -> Iterator[Any]:
    """What `fn` may call by name: methods and properties of `owner`, module-level
    functions, and functions held in its closure (a decorator's wrapped function)."""
    names = {name for part in _codes(code) for name in part.co_names}
    space = getattr(fn, "__globals__", {})
    for name in sorted(names):
        attr = inspect.getattr_static(owner, name, None)
        if isinstance(attr, property):
            attr = attr.fget
        if isinstance(attr, staticmethod | classmethod):
            attr = attr.__func__
        for candidate in (attr, space.get(name)):
            if isinstance(candidate, FunctionType):
                yield candidate
    for cell in getattr(fn, "__closure__", None) or ():
        if isinstance(cell.cell_contents, FunctionType):
            yield cell.cell_contents
