"""What the commands share: the console, output directories and the default store."""

from pathlib import Path

from rich.console import Console

console = Console()


def default_storage(out: Path) -> str:
    """The run's own journal file (several local workers can share it); a run made before
    journals were the default keeps its SQLite file."""
    legacy = out / "study.db"
    return f"sqlite:///{legacy}" if legacy.exists() else str(out / "study.journal")
