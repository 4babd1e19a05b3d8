"""The Store: bitscout's record of a search, kept in an Optuna storage."""
