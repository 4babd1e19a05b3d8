"""The end of a search imports pandas (0.3 s), matplotlib (0.4 s) and, for a report's
parameter importances, scikit-learn through `optuna.importance` (1.3 s): `prefetch` imports
them in a thread while the search runs, which waits on the store's writes and on PyTorch's
kernels and so leaves the interpreter free."""

import sys

from bitscout._core.processes import import_behind

# What the end of a search imports: pandas for the rankings, matplotlib for the report.
FINAL_MODULES = ("bitscout.results.conclude", "bitscout.results.display")
REPORT_MODULES = ("bitscout.results.report_md", "optuna.importance")


def prefetch(report: bool) -> None:
    """Start importing what the search's end needs (with `report`: the report's too), in a
    daemon thread named "prefetch"; nothing when everything is imported already."""
    modules = [*FINAL_MODULES, *(REPORT_MODULES if report else ())]
    missing = [m for m in modules if m not in sys.modules]
    if missing:
        import_behind(missing)
