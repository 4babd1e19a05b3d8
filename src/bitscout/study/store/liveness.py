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
from collections.abc import Callable

from bitscout.study.store.base import HEARTBEAT, WORKER, TrialFinished, TrialRecord

HEARTBEAT_S = 5.0
# A trial from another host is stale once its heartbeat is this old; on this host a dead
# process is seen at once, so only remote workers ever wait this long.
GRACE_S = 60.0
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


def _last_sign(trial: TrialRecord) -> float:
    started = trial.started.timestamp() if trial.started else 0.0
    return max(float(trial.user_attrs.get(HEARTBEAT, 0.0)), started)


def is_stale(trial: TrialRecord, grace: float = GRACE_S) -> bool:
    if trial.state != "running":
        return False
    alive = _alive_here(str(trial.user_attrs.get(WORKER, "")))
    if alive is not None:
        return not alive
    return time.time() - _last_sign(trial) > grace


Beat = Callable[[float], None]  # stamps one trial with the time


class Heartbeat:
    """A daemon thread that stamps the watched trial every `interval` seconds."""

    def __init__(self, interval: float = HEARTBEAT_S) -> None:
        self._interval = interval
        self._beat: Beat | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def watch(self, beat: Beat | None) -> None:
        """Stamp through `beat` from now on (None: nothing to stamp)."""
        self._beat = beat

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            beat = self._beat
            if beat is None:
                continue
            with contextlib.suppress(TrialFinished):  # it finished meanwhile
                beat(time.time())

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
