"""The batched forms of accuracy and cross-entropy: per candidate, the sum over a block's rows,
from logits laid out by class.

Both read the largest logit of every row, found once per block for both. Each step runs over
one class's logits of one candidate, contiguous along the rows, into preallocated per-row
temporaries of the same layout: these sums were most of a search's evaluation time. Per row,
the operations and their order are those of the textbook forms (torch.argmax's first largest
logit; log-sum-exp in float64), so each row's values are the same to the last bit; only the
sum over the rows is grouped otherwise (numpy's pairwise summation).
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
    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate and row [g, b], the largest logit and the first class holding it (as
        torch.argmax: the first NaN where there is one)."""
        z = self.z
        top = z[:, 0].copy()
        index = np.zeros(top.shape, np.min_scalar_type(z.shape[1] - 1))
        above = np.empty(top.shape, bool)
        step = np.empty_like(index)
        for c in range(1, z.shape[1]):
            np.greater(z[:, c], top, out=above)
            # index only grows, so max(index, c * above) is c exactly where z[c] > top.
            np.multiply(above, index.dtype.type(c), out=step)
            np.maximum(index, step, out=index)
            np.maximum(top, z[:, c], out=top)  # NaN spreads into top: one check below
        if np.isnan(top).any():  # the loop above would pick a later class over a NaN
            index = z.argmax(axis=1)
        return top, index

    @functools.cached_property
    def picked(self) -> np.ndarray:
        """Per candidate and row [g, b], the target's logit."""
        g, classes, b = self.z.shape
        return np.take(self.z.reshape(g, classes * b), self.targets * b + np.arange(b), axis=1)


def correct(block: ClassMajor) -> np.ndarray:
    """Per candidate, the rows whose first largest logit (as torch.argmax) is the target."""
    index = block.top[1]
    targets = block.targets
    if len(targets) and targets.min() >= 0 and targets.max() <= np.iinfo(index.dtype).max:
        targets = targets.astype(index.dtype)  # compared without widening every index
    return np.count_nonzero(index == targets, axis=1)


def cross_entropy(block: ClassMajor) -> np.ndarray:
    """Per candidate, the summed cross-entropy in float64: per row, the log of the sum of
    exp(logit - largest) over the classes in order, plus the largest, minus the target's."""
    top = block.top[0].astype(np.float64)
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
    total += top
    total -= block.picked
    return total.sum(axis=1)
