"""Our own exhaustive strategy (not Optuna's BruteForceSampler), safe for many workers.

The space is cut into chunks of consecutive candidates (index order: layers in model order,
the last dimension fastest, so neighbours share their longest prefix of layer configs). A
worker claims a chunk by starting one RUNNING trial, its *token*, for the chunk's last pending
candidate; the lowest-numbered live token of a chunk owns it (trial numbers are handed out
atomically by the store), and a worker that loses a race prunes its token. The owner records
the chunk's other candidates as they finish and completes the token last, so a worker killed
mid-chunk leaves exactly one RUNNING trial behind, which the next worker fails and evaluates
again, together with the rest of the chunk.
"""

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from bitscout.liveness import INTERRUPTED, Heartbeat, fail_stale, worker_id
from bitscout.store import abandon_trial, finish_trial, record, start_trial
from bitscout.strategies.base import STRATEGIES, SearchContext, Strategy

BATCH = 64  # candidates evaluated together, then streamed to the store
POLL_S = 1.0  # how often an idle worker looks for chunks freed by a dead one


def chunk_size(space_size: int) -> int:
    """Small enough that a few workers share a small space, large enough to amortise a claim."""
    return min(256, max(8, space_size // 64))


@dataclass
class Survey:
    """The study as a brute-force worker sees it: what is done and who holds which chunk."""

    done: set[int]  # complete, or failed by their own evaluation (never retried)
    complete: int  # how many of `done`: n_trials counts both
    held: dict[int, list[FrozenTrial]]  # chunk -> its RUNNING tokens
    others_running: bool


class Surveyor:
    """Reads the study; finished trials never change, so each is indexed once."""

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.finished: set[int] = set()
        self.done: set[int] = set()
        self.complete = 0

    def __call__(self) -> Survey:
        held: dict[int, list[FrozenTrial]] = {}
        others = False
        for t in self.ctx.study.get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING:
                if "chunk" in t.user_attrs:
                    held.setdefault(t.user_attrs["chunk"], []).append(t)
                others = others or t.user_attrs.get("worker") != worker_id()
            elif t.state.is_finished() and t.number not in self.finished:
                self.finished.add(t.number)
                self._index(t)
        return Survey(self.done, self.complete, held, others)

    def _index(self, t: FrozenTrial) -> None:
        ended = "metrics" in t.user_attrs or t.user_attrs.get("failure") == "error"
        if ended and t.state in (TrialState.COMPLETE, TrialState.FAIL):
            self.done.add(self.ctx.space.index(t.params))
            self.complete += 1


class BruteForce(Strategy):
    """Evaluates every candidate once, in index order; re-running an interrupted search (or
    starting more workers on the same study) evaluates only what no one has."""

    def run(self, ctx: SearchContext) -> None:
        target = ctx.settings.n_trials or ctx.space.size
        size = chunk_size(ctx.space.size)
        rng = random.Random(worker_id())
        survey = Surveyor(ctx)
        full: set[int] = set()
        with Heartbeat(ctx.study) as heartbeat:
            while not ctx.timed_out():
                fail_stale(ctx.study)
                view = survey()
                if view.complete >= target:
                    return
                chunk = _pick(ctx.space.size, size, view, rng, full)
                if chunk is None:
                    if not view.held:
                        return  # nothing left that anyone could still evaluate
                    time.sleep(POLL_S)  # other workers hold the rest: wait, take over the dead
                    continue
                todo = _pending(chunk, size, ctx.space.size, view.done)
                claim = _claim(ctx, survey, chunk, todo[: target - view.complete][-1])
                if claim is not None:
                    _run_chunk(ctx, survey, claim, target, heartbeat)


def _pending(chunk: int, size: int, total: int, done: set[int]) -> list[int]:
    return [i for i in range(chunk * size, min(total, (chunk + 1) * size)) if i not in done]


def _pick(total: int, size: int, view: Survey, rng: random.Random, full: set[int]) -> int | None:
    """A chunk with pending candidates and no live token: the first one when this worker is
    alone (a reproducible order), a random one when others run (fewer lost races). Chunks
    found `full` (nothing pending, which never changes back) are not looked at again."""
    chunks = range((total + size - 1) // size)
    order = rng.sample(chunks, len(chunks)) if view.others_running else chunks
    for c in order:
        if c in full or c in view.held:
            continue
        if _pending(c, size, total, view.done):
            return c
        full.add(c)
    return None


@dataclass(frozen=True)
class Claim:
    chunk: int
    token: int  # trial id of the RUNNING token
    index: int  # the token's candidate, evaluated last


def _claim(ctx: SearchContext, survey: Surveyor, chunk: int, index: int) -> Claim | None:
    """Start this worker's token for `chunk`; the claim if it holds. Of the chunk's RUNNING
    tokens the earliest wins: a later one always sees it, so exactly one worker owns a chunk."""
    token = start_trial(ctx.study, ctx.space, ctx.space.config(index), {"chunk": chunk})
    view = survey()
    first = min(view.held[chunk], key=lambda t: t.number)
    if first._trial_id != token:
        reason = f"chunk {chunk} was claimed first by trial {first.number}"
    elif index in view.done:  # finished by a worker whose token ended after our survey
        reason = f"candidate {index} was evaluated meanwhile"
    else:
        return Claim(chunk, token, index)
    abandon_trial(ctx.study, token, TrialState.PRUNED, reason)
    return None


def _run_chunk(
    ctx: SearchContext, survey: Surveyor, claim: Claim, target: int, heartbeat: Heartbeat
) -> None:
    """Evaluate the claimed chunk's pending candidates (from a fresh survey), token last."""
    size = chunk_size(ctx.space.size)
    view = survey()
    todo = _pending(claim.chunk, size, ctx.space.size, view.done)
    rest = [i for i in todo if i < claim.index][: max(0, target - view.complete - 1)]
    heartbeat.watch(claim.token)
    try:
        for start in range(0, len(rest), BATCH):
            if ctx.timed_out():
                break  # the token's own candidate still runs, so the claim ends cleanly
            _evaluate(ctx, rest[start : start + BATCH])
        config = ctx.space.config(claim.index)
        result = ctx.score(config)
    except BaseException:
        abandon_trial(ctx.study, claim.token, TrialState.FAIL, f"{INTERRUPTED}: search stopped")
        raise
    finally:
        heartbeat.watch(None)
    finish_trial(ctx.study, claim.token, result)
    ctx.on_trial(ctx.study._storage.get_trial_number_from_id(claim.token), config, result)


def _evaluate(ctx: SearchContext, indices: Sequence[int]) -> None:
    """Score `indices` together and stream each result to the store."""
    configs = [ctx.space.config(i) for i in indices]
    for config, result in zip(configs, ctx.score_many(configs), strict=True):
        ctx.on_trial(record(ctx.study, ctx.space, config, result), config, result)


STRATEGIES.register("bruteforce")(BruteForce())
