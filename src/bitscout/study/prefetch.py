"""The end of a search imports pandas (0.3 s), matplotlib (0.4 s) and, for a report's
parameter importances, scikit-learn through `optuna.importance` (1.3 s): `prefetch` imports
them in a thread while the search runs, which waits on the store's writes and on PyTorch's
kernels and so leaves the interpreter free."""

import importlib
import sys
import threading

# What the end of a search imports: pandas for the rankings, matplotlib for the report.
FINAL_MODULES = ("bitscout.results.conclude", "bitscout.results.display")
REPORT_MODULES = ("bitscout.results.report_md", "optuna.importance")
_started: list[threading.Thread] = []


def prefetch(report: bool) -> None:
    """Start importing what the search's end needs (with `report`: the report's too), in a
    daemon thread named "prefetch"; nothing when everything is imported already."""
    modules = [*FINAL_MODULES, *(REPORT_MODULES if report else ())]
    missing = [m for m in modules if m not in sys.modules]
    if missing:
        thread = threading.Thread(target=lambda: [importlib.import_module(m) for m in missing],
                                  daemon=True, name="prefetch")  # fmt: skip
        thread.start()
        _started.append(thread)


def settled() -> None:
    """Wait until no prefetch import runs: the report forks a child to draw in, and a module
    half imported by another thread at the fork stays locked in the child for good. The
    report imports these modules itself, so this waits for nothing it would not wait for."""
    while _started:
        _started.pop().join()
