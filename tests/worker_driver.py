"""`bitscout` in a subprocess with test-only faults: python worker_driver.py ARGS...

DRIVER_SLOW_S   sleep this long per candidate evaluated (so workers overlap)
DRIVER_KILL_AT  SIGKILL this process when it starts its N-th evaluation (0-based)
DRIVER_KILL_AFTER  SIGKILL it right after its N-th trial is recorded (1-based)
"""

import os
import signal
import sys
import time

from bitscout.cli import main
from bitscout.study.store.optuna_store import OptunaStore
from bitscout.study.strategies import base

SLOW = float(os.environ.get("DRIVER_SLOW_S", "0"))
KILL_AT = int(os.environ.get("DRIVER_KILL_AT", "-1"))
KILL_AFTER = int(os.environ.get("DRIVER_KILL_AFTER", "-1"))
counts = {"evaluated": 0, "recorded": 0}
score_many = base.SearchContext.score_many
record, finish = OptunaStore.record, OptunaStore.finish


def slow_score_many(self, configs, **kw):
    results = []
    for config in configs:
        if counts["evaluated"] == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(SLOW)
        results += score_many(self, [config], **kw)
        counts["evaluated"] += 1
    return results


def counted(write):
    def wrapper(*args, **kwargs):
        out = write(*args, **kwargs)
        counts["recorded"] += 1
        if counts["recorded"] == KILL_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    return wrapper


base.SearchContext.score_many = slow_score_many
OptunaStore.record = counted(record)  # type: ignore[method-assign]
OptunaStore.finish = counted(finish)  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
