"""Reading TOML files: a missing, unreadable, oversized or malformed file is one ConfigError."""

import tomllib
from pathlib import Path
from typing import Any

from bitscout.errors import ConfigError

MAX_CONFIG_BYTES = 2**20


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable, oversized or malformed file is a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # /dev/zero or a mistyped data file: stop early
        if len(data) > MAX_CONFIG_BYTES:
            rule = f"is larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a config file"
            raise ConfigError(str(path), rule, file=True)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            str(path), f"cannot read the file ({err.__class__.__name__})", file=True
        ) from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), f"invalid TOML: {err}", file=True) from err
    except RecursionError as err:  # tables or arrays nested thousands deep
        raise ConfigError(str(path), "invalid TOML: nested too deeply", file=True) from err
