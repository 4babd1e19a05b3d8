"""`bitscout dashboard DIR`: a run's study in optuna-dashboard (an optional dependency)."""

import importlib

from rich.console import Console

from bitscout.errors import ConfigError
from bitscout.study.storage import mask_password, open_storage


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
    storage = open_storage(storage_url, notify=console.print)
    console.print(f"serving {mask_password(storage_url)} at http://{host}:{port} (Ctrl-C stops)")
    dashboard.run_server(storage, host=host, port=port)
