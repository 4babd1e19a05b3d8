"""The one exception type users see for bad input."""


class ConfigError(ValueError):
    """Bad user input: names the config key, the rule and the offending value.

    The CLI prints it on one line and exits with status 2. Its message is
    `"{key}: {rule}, got {value!r}"` (without `, got ...` when no value is given).

    Args:
        key: the config key, Python argument or file the input came from.
        rule: what the input must be (or what is wrong with it).
        value: the offending value; omitted when there is none to show.
        file: True when `key` is itself a file's path (a checkpoint, a TOML file).

    Attributes:
        key: as given.
        rule: as given.
        value: as given (`...` when omitted).
        file: as given.
    """

    def __init__(self, key: str, rule: str, value: object = ..., *, file: bool = False) -> None:
        self.key = key
        self.file = file  # the key is itself a file's path (a checkpoint, a TOML file)
        self.rule = rule
        self.value = value
        got = "" if value is ... else f", got {value!r}"
        super().__init__(f"{key}: {rule}{got}" if key else f"{rule}{got}")


class SearchFailed(RuntimeError):
    """A search that could not produce a result: every evaluated candidate failed, the audit
    found the fast engine's figures differ from the plain path's, or the study's database
    failed (its driver's error, the storage URL's credentials masked; a raw `@` in a password
    can leave part of it in a driver's words, so write it as `%40`). The CLI exits with
    status 1."""
