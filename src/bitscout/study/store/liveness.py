"""Which running trials still have a live worker behind them.

A search killed with SIGKILL (or a machine that dies) leaves its trials RUNNING in the store
forever. Every trial a bitscout worker starts carries the worker's identity, and the worker
beats a heartbeat into its current trial while it evaluates; any worker can then tell a trial
whose worker is gone and record it as failed, so its config is evaluated again.
"""

import contextlib
import os
import socket
import threading
import time
import uuid

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from bitscout.study.store import adapter

HEARTBEAT_S = 5.0
# A trial from another host is stale once its heartbeat is this old; on this host a dead
# process is seen at once, so only remote workers ever wait this long.
GRACE_S = 60.0
INTERRUPTED = "interrupted"
_TOKEN = uuid.uuid4().hex[:8]


def _new_token() -> None:
    """A forked worker is a worker of its own, whatever pid the parent had."""
    global _TOKEN
    _TOKEN = uuid.uuid4().hex[:8]


os.register_at_fork(after_in_child=_new_token)


def worker_id() -> str:
    """host:pid:token; the token tells this process from a dead one that had the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def _alive_here(worker: str) -> bool | None:
    """Whether `worker` still runs, if it ran on this host; None when only its heartbeat can
    tell."""
    host, pid, token = (worker.rsplit(":", 2) + ["", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():
        return token == _TOKEN
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _last_sign(trial: FrozenTrial) -> float:
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return max(float(trial.user_attrs.get("heartbeat", 0.0)), started)


def is_stale(trial: FrozenTrial, grace: float = GRACE_S) -> bool:
    if trial.state != TrialState.RUNNING:
        return False
    alive = _alive_here(str(trial.user_attrs.get("worker", "")))
    if alive is not None:
        return not alive
    return time.time() - _last_sign(trial) > grace


def fail_stale(study: optuna.Study, grace: float = GRACE_S) -> list[FrozenTrial]:
    """Record the running trials of dead workers as failed; return those this call failed.
    Failing is atomic in the storage, so when several workers race, each trial is failed (and
    retried) by exactly one of them."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, grace):
            continue
        worker = trial.user_attrs.get("worker", "an unknown worker")
        try:
            number = adapter.trial_id(trial)
            adapter.set_attr(study, number, "failure", INTERRUPTED)
            reason = f"{INTERRUPTED}: worker {worker} stopped mid-trial"
            adapter.set_attr(study, number, "reason", reason)
            adapter.set_state(study, number, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(trial)
    return failed


class Heartbeat:
    """A daemon thread that stamps the watched trial every `interval` seconds."""

    def __init__(self, study: optuna.Study, interval: float = HEARTBEAT_S) -> None:
        self._study = study
        self._interval = interval
        self._trial_id: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def watch(self, trial_id: int | None) -> None:
        self._trial_id = trial_id

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            trial_id = self._trial_id
            if trial_id is None:
                continue
            with contextlib.suppress(UpdateFinishedTrialError):  # it finished meanwhile
                adapter.set_attr(self._study, trial_id, "heartbeat", time.time())

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
