"""This process's CPUs, and the imports it runs in background threads (a fork waits for those:
a module half imported by another thread at the fork stays locked in the child for good)."""

import importlib
import os
import threading
from collections.abc import Sequence

_importing: list[threading.Thread] = []


def cpu_count() -> int:
    """The CPUs this process may run on (a container or taskset may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def import_behind(modules: Sequence[str]) -> None:
    """Import `modules` in a daemon thread named "prefetch" while this thread goes on."""
    names = list(modules)
    thread = threading.Thread(target=lambda: [importlib.import_module(m) for m in names],
                              daemon=True, name="prefetch")  # fmt: skip
    thread.start()
    _importing.append(thread)


def imports_settled() -> None:
    """Wait until no `import_behind` thread runs (before a fork)."""
    while _importing:
        _importing.pop().join()
