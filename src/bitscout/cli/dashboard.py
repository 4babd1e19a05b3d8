"""`bitscout dashboard DIR`: a run's study in optuna-dashboard (an optional dependency)."""

import argparse
import importlib
from pathlib import Path

from rich.console import Console

from bitscout.cli.common import console, default_storage
from bitscout.errors import ConfigError
from bitscout.study.store.storage import connect, mask_password


def serve_dashboard(storage_url: str, host: str, port: int, console: Console) -> None:
    """Serve until interrupted; bound to `host` (127.0.0.1 unless asked otherwise, since the
    dashboard has no authentication)."""
    try:
        dashboard = importlib.import_module("optuna_dashboard")
    except ImportError as err:
        raise ConfigError(
            "dashboard",
            "needs the optional dependency optuna-dashboard: pip install 'bitscout[dashboard]'",
        ) from err
    storage = connect(storage_url, notify=console.print)
    console.print(f"serving {mask_password(storage_url)} at http://{host}:{port} (Ctrl-C stops)")
    dashboard.run_server(storage, host=host, port=port)


def cmd_dashboard(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    storage = args.storage or default_storage(out)
    if args.storage is None and not Path(storage.removeprefix("sqlite:///")).exists():
        raise ConfigError(str(out), "no study here (study.journal or study.db)", file=True)
    if "://" not in storage and not Path(storage).exists():  # serving it would create it
        raise ConfigError("--storage", "no journal file here", storage)
    serve_dashboard(storage, args.host, args.port, console)
    return 0
