"""`bitscout` in a subprocess with test-only faults: python worker_driver.py ARGS...

DRIVER_SLOW_S   sleep this long per candidate evaluated (so workers overlap)
DRIVER_KILL_AT  SIGKILL this process when it starts its N-th evaluation (0-based)
DRIVER_KILL_AFTER  SIGKILL it right after the write that records its N-th trial (1-based;
                   a brute-force batch is one write: the kill follows the whole batch)
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
counts = {"evaluated": 0, "recorded": 0, "batch": 0}
score_many = base.SearchContext.score_many
record, finish = OptunaStore.record, OptunaStore.finish
record_many = OptunaStore.record_many


def slow_score_many(self, configs, **kw):
    results = []
    for config in configs:
        if counts["evaluated"] == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(SLOW)
        results += score_many(self, [config], **kw)
        counts["evaluated"] += 1
    return results


def counted(write, many=False):
    def wrapper(*args, **kwargs):
        # a batch counts once, whole (a store without batches records it trial by trial)
        counts["batch"] += many
        try:
            out = write(*args, **kwargs)
        finally:
            counts["batch"] -= many
        if counts["batch"]:
            return out
        before = counts["recorded"]
        counts["recorded"] += len(out) if many else 1
        if before < KILL_AFTER <= counts["recorded"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    return wrapper


base.SearchContext.score_many = slow_score_many
OptunaStore.record = counted(record)  # type: ignore[method-assign]
OptunaStore.finish = counted(finish)  # type: ignore[method-assign]
OptunaStore.record_many = counted(record_many, many=True)  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
