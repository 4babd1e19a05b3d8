"""What the commands share: the console, output directories and the default store."""

from pathlib import Path

from rich.console import Console

from bitscout.errors import ConfigError

console = Console()


def output_dir(path: str | Path, flag: str) -> Path:
    """An output directory to create or reuse: refused when a file is in the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(flag, "names an existing file, not a directory", str(path))
    return path


def default_storage(out: Path) -> str:
    """The run's own journal file (several local workers can share it); a run made before
    journals were the default keeps its SQLite file."""
    legacy = out / "study.db"
    return f"sqlite:///{legacy}" if legacy.exists() else str(out / "study.journal")
