"""The search itself: objective, settings, strategies, and the Optuna study they record into
(the store, its opening and repair, worker liveness, extra worker processes)."""
