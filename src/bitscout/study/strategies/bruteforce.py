"""Our own exhaustive strategy (not Optuna's BruteForceSampler), safe for many workers.

The space is cut into chunks of consecutive positions of the search order: index order
(layers in model order, the last dimension fastest, so neighbours share their longest prefix
of layer configs) or, with `setup.order = "shuffled"`, a seeded permutation of it (an anytime
brute force: any prefix is a uniform sample without repeats). A
worker claims a chunk by starting one RUNNING trial, its *token*, for the chunk's last pending
candidate; the lowest-numbered live token of a chunk owns it (trial numbers are handed out
atomically by the store), and a worker that loses a race prunes its token. The owner records
the chunk's other candidates as they finish and completes the token last, so a worker killed
mid-chunk leaves exactly one RUNNING trial behind, which the next worker fails and evaluates
again, together with the rest of the chunk. A worker stopped by an exception or an interrupt
fails its token on the way out (`Store.writing`), so its chunk runs again on resume.

A token also reserves how many candidates its chunk will evaluate (its *quota*). A new claim
takes no more than `n_trials` minus the trials that ended and the quotas still open in the
live claims numbered before it, so however many workers run, the study ends with exactly
`n_trials` trials (quotas only ever shrink, which keeps every later claim's count sound).
"""

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bitscout.quant.space import Config
from bitscout.results.trials import Bitset, Result
from bitscout.study.chunks import chunk_of, is_chunk, token_attrs
from bitscout.study.permutation import Permutation
from bitscout.study.store.base import (
    CHUNK,
    CLAIM,
    HEARTBEAT,
    QUOTA,
    WORKER,
    TrialRecord,
    has_ended,
)
from bitscout.study.store.liveness import Heartbeat, worker_id
from bitscout.study.strategies.base import STRATEGIES, SearchContext, Strategy
from bitscout.study.strategies.ladder import climb

BATCH = 64  # candidates evaluated together, then streamed to the store
POLL_S = 1.0  # how often an idle worker looks for chunks freed by a dead one


def chunk_size(space_size: int) -> int:
    """Small enough that a few workers share a small space, large enough to amortise a claim."""
    return min(256, max(8, space_size // 64))


@dataclass
class Survey:
    """The study as a brute-force worker sees it: what is done and who holds which chunk."""

    done: Bitset  # complete, or failed by their own evaluation (never retried)
    complete: int  # how many of `done`: n_trials counts both
    held: dict[int, list[TrialRecord]]  # chunk -> its RUNNING tokens
    others_running: bool
    by_claim: Counter[int] = field(default_factory=Counter)  # token number -> trials it ended

    def open_quota(self, token: TrialRecord) -> int:
        """How many more candidates the live claim `token` may still evaluate."""
        quota = int(token.user_attrs.get(QUOTA, 0))
        return max(0, quota - self.by_claim[token.number])

    def tokens(self) -> list[TrialRecord]:
        return [t for tokens in self.held.values() for t in tokens]

    def room(self, target: int, before: int | None = None) -> int:
        """Trials still free for a claim: `target` minus those ended and the open quotas of
        the live claims (only those numbered below `before`, counting only trials that did
        not end under a later claim, when given)."""
        later = 0 if before is None else sum(n for c, n in self.by_claim.items() if c > before)
        live = [t for t in self.tokens() if before is None or t.number < before]
        return target - (self.complete - later) - sum(self.open_quota(t) for t in live)


class Surveyor:
    """Reads the study; finished trials never change, so each is read and indexed once: a
    survey reads the trials new since the last one, and those it left running or waiting."""

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.read = 0  # trials numbered below this were read
        self.unsettled: list[int] = []  # and of those, the ones running or waiting then
        self.done = Bitset(ctx.space.size)
        self.complete = 0
        self.by_claim: Counter[int] = Counter()

    def __call__(self) -> Survey:
        store = self.ctx.store
        again = [store.trial(number) for number in self.unsettled]
        new = store.trials_from(self.read)
        self.read += len(new)
        self.unsettled = []
        held: dict[int, list[TrialRecord]] = {}
        others = False
        for t in (*again, *new):
            if t.state not in ("running", "waiting"):
                self._index(t)
                continue
            self.unsettled.append(t.number)
            if t.state == "running":
                if CHUNK in t.user_attrs:
                    held.setdefault(t.user_attrs[CHUNK], []).append(t)
                others = others or t.user_attrs.get(WORKER) != worker_id()
        return Survey(self.done, self.complete, held, others, self.by_claim)

    def _index(self, t: TrialRecord) -> None:
        if is_chunk(t):
            indices = chunk_of(t).indices
            self.done.add_many(indices)
            self.complete += len(indices)
        elif has_ended(t):
            self.done.add(self.ctx.space.index(t.params))
            self.complete += 1
            claim = t.user_attrs.get(CLAIM, t.number if CHUNK in t.user_attrs else None)
            if claim is not None:
                self.by_claim[claim] += 1


Order = Callable[[int], int]  # position in the search order -> candidate index


def search_order(ctx: SearchContext) -> Order:
    size = ctx.space.size
    if ctx.settings.order == "shuffled":
        return Permutation(size, ctx.settings.shuffle_seed)
    if ctx.settings.order == "reversed":
        return lambda position: size - 1 - position
    return lambda position: position


class BruteForce(Strategy):
    """Evaluates every candidate once, in index or seeded shuffled order; re-running an
    interrupted search (or starting more workers on the same study) evaluates only what no
    one has."""

    def run(self, ctx: SearchContext) -> None:
        target = min(ctx.settings.n_trials or ctx.space.size, ctx.space.size)
        size = chunk_size(ctx.space.size)
        order = search_order(ctx)
        if ctx.settings.fidelity is not None:  # one worker, unchunked (settings.check_training)
            climb(ctx, [order(p) for p in range(target)])
            return
        rng = random.Random(worker_id())
        survey = Surveyor(ctx)
        full: set[int] = set()
        with ctx.store.writing(), Heartbeat() as heartbeat:
            while not ctx.timed_out():
                ctx.store.fail_stale()
                view = survey()
                room = view.room(target)
                chunk = _pick(ctx.space.size, size, view, rng, full, order) if room > 0 else None
                if chunk is None:
                    if not view.held:
                        return  # nothing left that anyone could still evaluate
                    time.sleep(POLL_S)  # other workers hold the rest: wait, take over the dead
                    continue
                todo = _pending(chunk, size, ctx.space.size, view.done, order)[:room]
                claim = _claim(ctx, survey, chunk, todo[-1], len(todo), target, order)
                if claim is not None:
                    _run_chunk(ctx, survey, claim, heartbeat, order)


def _pending(chunk: int, size: int, total: int, done: Bitset, order: Order) -> list[int]:
    """The chunk's positions whose candidates no one has evaluated yet."""
    positions = range(chunk * size, min(total, (chunk + 1) * size))
    return [p for p in positions if order(p) not in done]


def _pick(
    total: int, size: int, view: Survey, rng: random.Random, full: set[int], order: Order
) -> int | None:
    """A chunk with pending candidates and no live token: the first one when this worker is
    alone (a reproducible order), a random one when others run (fewer lost races). Chunks
    found `full` (nothing pending, which never changes back) are not looked at again."""
    chunks = range((total + size - 1) // size)
    picks = rng.sample(chunks, len(chunks)) if view.others_running else chunks
    for c in picks:
        if c in full or c in view.held:
            continue
        if _pending(c, size, total, view.done, order):
            return c
        full.add(c)
    return None


@dataclass(frozen=True)
class Claim:
    chunk: int
    token: int  # trial id of the RUNNING token
    number: int  # its trial number: the `claim` tag of the chunk's other trials
    position: int  # the token's position in the search order, evaluated last in its chunk
    index: int  # the token's candidate
    quota: int  # candidates this claim evaluates, the token's own included


def _claim(
    ctx: SearchContext,
    survey: Surveyor,
    chunk: int,
    position: int,
    quota: int,
    target: int,
    order: Order,
) -> Claim | None:
    """Start this worker's token for `chunk`; the claim if it holds. Of the chunk's RUNNING
    tokens the earliest wins: a later one always sees it, so exactly one worker owns a chunk.
    The quota is cut to what the claims numbered before it leave of `target`."""
    index = order(position)
    token = ctx.store.claim(ctx.space.config(index), chunk, quota)
    return _settle(ctx, survey, Claim(chunk, token, -1, position, index, quota), target)


def _settle(ctx: SearchContext, survey: Surveyor, claim: Claim, target: int) -> Claim | None:
    """The claim with its number and final quota if this worker owns the chunk, else None
    (its token pruned)."""
    chunk, token, index, quota = claim.chunk, claim.token, claim.index, claim.quota
    number = ctx.store.number_of(token)
    view = survey()
    first = min(view.held[chunk], key=lambda t: t.number)
    room = view.room(target, before=number)
    if first.ref != token:
        reason = f"chunk {chunk} was claimed first by trial {first.number}"
    elif index in view.done:  # finished by a worker whose token ended after our survey
        reason = f"candidate {index} was evaluated meanwhile"
    elif room <= 0:
        reason = "n_trials is reached by the chunks other workers hold"
    else:
        if room < quota:
            ctx.store.set_attr(token, QUOTA, room)
        return Claim(chunk, token, number, claim.position, index, min(quota, room))
    ctx.store.abandon(token, "pruned", reason)
    return None


def _run_chunk(
    ctx: SearchContext, survey: Surveyor, claim: Claim, heartbeat: Heartbeat, order: Order
) -> None:
    """Evaluate the claimed chunk's pending candidates (from a fresh survey), token last:
    each streamed to the store as its own trial, or (chunked) all in the token at the end."""
    size = chunk_size(ctx.space.size)
    chunked = bool(ctx.settings.chunked)
    heartbeat.watch(lambda now: ctx.store.set_attr(claim.token, HEARTBEAT, now))
    held: list[tuple[int, Config, Result]] = []  # chunked: results kept for the token
    try:
        todo = _pending(claim.chunk, size, ctx.space.size, survey().done, order)
        rest = [order(p) for p in todo if p < claim.position][: claim.quota - 1]
        for start in range(0, len(rest), BATCH):
            if ctx.timed_out():
                break  # the token's own candidate still runs, so the claim ends cleanly
            batch = rest[start : start + BATCH]
            if chunked:
                held += _score(ctx, batch)
            else:
                _evaluate(ctx, batch, claim.number)
        (own,) = _score(ctx, [claim.index], cache=not chunked)
        held.append(own)
    finally:
        heartbeat.watch(None)
    _finish(ctx, claim, held if chunked else [own])


def _score(
    ctx: SearchContext, indices: Sequence[int], cache: bool = False
) -> list[tuple[int, Config, Result]]:
    configs = [ctx.space.config(i) for i in indices]
    results = ctx.score_many(configs, cache=cache)
    return list(zip(indices, configs, results, strict=True))


def _finish(ctx: SearchContext, claim: Claim, held: list[tuple[int, Config, Result]]) -> None:
    """End the token with its own candidate's result (and, chunked, every result it holds)."""
    result = held[-1][2]
    attrs = None
    if ctx.settings.chunked:
        names = list(ctx.evaluator.metrics)
        attrs = token_attrs([i for i, _, _ in held], [r for _, _, r in held], names)
    ctx.store.finish(claim.token, result, attrs)
    if not ctx.settings.chunked:
        ctx.on_trial(claim.number, held[-1][1], result)
        return
    for index, config, each in held:  # chunked: rows are numbered by candidate index
        ctx.on_trial(index, config, each)


def _evaluate(ctx: SearchContext, indices: Sequence[int], claim: int) -> None:
    """Score `indices` together and stream each result to the store, tagged with the claim."""
    scored = [(config, result) for _, config, result in _score(ctx, indices, cache=True)]
    numbers = ctx.store.record_many(scored, {CLAIM: claim})
    for number, (config, result) in zip(numbers, scored, strict=True):
        ctx.on_trial(number, config, result)


STRATEGIES.register("bruteforce")(BruteForce())
