"""The batched forms of accuracy and cross-entropy: per candidate, the sum over a block's rows,
from logits laid out by class.

Both read the largest logit of every row, found once per block for both. Each step runs over
one class's logits of one candidate, contiguous along the rows, into preallocated per-row
temporaries of the same layout: these sums were most of a search's evaluation time. Per row,
the operations and their order are those of the textbook forms (torch.argmax's first largest
logit; log-sum-exp in float64), so each row's values are the same to the last bit; only the
sum over the rows is grouped otherwise (numpy's pairwise summation).

Rows sorted by target (the fast engine sorts its data so) make runs of one target class: there
a row's target logit is a slice, not a gather, and accuracy compares the target's logits with
the others' instead of finding each row's first largest class.
"""

import functools

import numpy as np


class ClassMajor:
    """The logits of g candidates on b rows by candidate and class, [g, classes, b], and the
    integer targets [b] of the rows."""

    def __init__(self, z: np.ndarray, targets: np.ndarray) -> None:
        self.z = z
        self.targets = targets

    @functools.cached_property
    def largest(self) -> np.ndarray:
        """Per candidate and row [g, b], the largest logit (NaN where a logit is NaN)."""
        return self.z.max(axis=1)

    @functools.cached_property
    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate and row [g, b], the largest logit and the first class holding it (as
        torch.argmax: the first NaN where there is one)."""
        z = self.z
        top = self.largest
        index = np.zeros(top.shape, np.min_scalar_type(z.shape[1] - 1))
        above = np.empty(top.shape, bool)
        step = np.empty_like(index)
        running = z[:, 0].copy()
        for c in range(1, z.shape[1]):
            np.greater(z[:, c], running, out=above)
            # index only grows, so max(index, c * above) is c exactly where z[c] > running.
            np.multiply(above, index.dtype.type(c), out=step)
            np.maximum(index, step, out=index)
            np.maximum(running, z[:, c], out=running)
        if np.isnan(top).any():  # the loop above would pick a later class over a NaN
            index = z.argmax(axis=1)
        return top, index

    @functools.cached_property
    def runs(self) -> list[tuple[int, slice]] | None:
        """(class, rows) of each run of one target when the targets are sorted, every one a
        class, and no logit NaN (torch.argmax's NaN rule needs the general path); else None."""
        t, classes = self.targets, self.z.shape[1]
        if not len(t) or t[0] < 0 or t[-1] >= classes or np.any(t[1:] < t[:-1]):
            return None
        if np.isnan(self.largest).any():  # the largest is NaN where any logit of its row is
            return None
        bounds = np.searchsorted(t, np.arange(classes + 1))
        return [(c, slice(bounds[c], bounds[c + 1]))
                for c in range(classes) if bounds[c] < bounds[c + 1]]  # fmt: skip

    @functools.cached_property
    def picked(self) -> np.ndarray:
        """Per candidate and row [g, b], the target's logit."""
        g, classes, b = self.z.shape
        return np.take(self.z.reshape(g, classes * b), self.targets * b + np.arange(b), axis=1)


def correct(block: ClassMajor) -> np.ndarray:
    """Per candidate, the rows whose first largest logit (as torch.argmax) is the target."""
    if block.runs is not None:
        return _correct_by_runs(block.z, block.runs)
    index = block.top[1]
    targets = block.targets
    if len(targets) and targets.min() >= 0 and targets.max() <= np.iinfo(index.dtype).max:
        targets = targets.astype(index.dtype)  # compared without widening every index
    return np.count_nonzero(index == targets, axis=1)


def _correct_by_runs(z: np.ndarray, runs: list[tuple[int, slice]]) -> np.ndarray:
    """`correct` on rows sorted by target, no logit NaN: on a run of target t, the first largest
    logit is t's where it is above every earlier class's and at least every later one's."""
    found = np.zeros(z.shape[0], np.int64)
    for t, rows in runs:
        target = z[:, t, rows]
        ok = np.ones(target.shape, bool)
        holds = np.empty_like(ok)
        for c in range(z.shape[1]):
            if c != t:
                (np.greater if c < t else np.greater_equal)(target, z[:, c, rows], out=holds)
                ok &= holds
        found += np.count_nonzero(ok, axis=1)
    return found


def cross_entropy(block: ClassMajor) -> np.ndarray:
    """Per candidate, the summed cross-entropy in float64: per row, the log of the sum of
    exp(logit - largest) over the classes in order, plus the largest, minus the target's."""
    top = block.largest.astype(np.float64)
    total = np.empty_like(top)
    term = np.empty_like(top)
    for c in range(block.z.shape[1]):
        out = term if c else total
        # Widened first (exactly), then subtracted: numpy's mixed-type subtraction is slower.
        np.copyto(out, block.z[:, c])
        np.exp(np.subtract(out, top, out=out), out=out)
        if c:
            total += term
    np.log(total, out=total)
    if block.runs is None:
        top -= block.picked
    else:
        for t, rows in block.runs:
            np.subtract(top[:, rows], block.z[:, t, rows], out=top[:, rows])
    total += top
    return total.sum(axis=1)
