"""The `bitscout` command: argv -> spec -> the public function -> print."""

from bitscout.cli.main import main, run

__all__ = ["main", "run"]
