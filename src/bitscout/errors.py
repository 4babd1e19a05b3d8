"""The one exception type users see for bad input."""


class ConfigError(ValueError):
    """Bad user input: names the config key, the rule and the offending value.

    The CLI prints it on one line and exits with status 2.
    """

    def __init__(self, key: str, rule: str, value: object = ..., *, file: bool = False) -> None:
        self.key = key
        self.file = file  # the key is itself a file's path (a checkpoint, a TOML file)
        self.rule = rule
        self.value = value
        got = "" if value is ... else f", got {value!r}"
        super().__init__(f"{key}: {rule}{got}" if key else f"{rule}{got}")


class SearchFailed(RuntimeError):
    """A search that could not produce a result (every candidate failed): exit status 1."""
