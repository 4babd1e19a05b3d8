"""The Store: bitscout's record of a search (`base.Store`), kept in an Optuna storage
(`optuna_store.OptunaStore`, opened by `storage.open_store`). Importing this package loads
neither Optuna nor anything else: the CLI reads `STORAGE_ENV` from here."""

# `--storage` may come from the environment: it keeps a password out of `ps` and shell history.
STORAGE_ENV = "BITSCOUT_STORAGE"
