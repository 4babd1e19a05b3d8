"""Stratified splits equal, row for row and in the same order, to scikit-learn's
`train_test_split(..., stratify=y, random_state=seed)`: the same draws from the same
`numpy.random.RandomState`. bitscout used scikit-learn for them until importing it (0.7 s)
became most of a command's start-up; reproducing it keeps every split, and so every
checkpoint trained on one, valid (a checkpoint evaluated on a different split would be
scored on rows it was trained on)."""

import math

import numpy as np

from bitscout.errors import ConfigError


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `draws` rows each class gets: proportional shares rounded down, the rest
    to the largest remainders, ties broken at random (scikit-learn's `_approximate_mode`)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1] if need > 0 else ():
        (inds,) = np.where(remainder == value)
        take = min(len(inds), need)
        floored[rng.choice(inds, size=take, replace=False)] += 1
        need -= take
        if need == 0:
            break
    return floored.astype(int)


def _check(key: str, counts: np.ndarray, n_train: int, n_test: int) -> None:
    n = int(counts.sum())
    if n == 0:
        raise ConfigError(key, "cannot split 0 samples: the dataset holds no rows")
    if counts.min() < 2:
        raise ConfigError(key, f"cannot split {n} samples: a class has only 1 member")
    if min(n_train, n_test) < len(counts):
        rule = f"cannot split {n} samples into {n_train} and {n_test} rows"
        raise ConfigError(key, f"{rule}, each of which must hold all {len(counts)} classes")


def shuffle_split(
    y: np.ndarray, n_train: int, n_test: int, seed: int, key: str = "dataset_options"
) -> tuple[np.ndarray, np.ndarray]:
    """Row indexes of a train and a test part of `y`, each keeping the class proportions;
    both shuffled."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    _check(key, counts, n_train, n_test)
    members = np.split(np.argsort(inverse.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        rows = members[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(rows[: n_i[i]])
        test.extend(rows[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def stratified_split(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test row indexes: the test part first, then validation out of
    the rest, rescaled so that it is `val_fraction` of the whole set."""
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    rest, test = shuffle_split(y, n - n_test, n_test, seed)
    share = val_fraction / (1 - test_fraction)
    if share >= 1:
        raise ConfigError("dataset_options", f"cannot split {n} samples: no training data left")
    n_val = math.ceil(share * len(rest))
    train, val = shuffle_split(y[rest], len(rest) - n_val, n_val, seed)
    return rest[train], rest[val], test


def stratified_subsample(y: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` row indexes of `y` keeping the class proportions, shuffled."""
    keep, _ = shuffle_split(y, count, len(y) - count, seed, key="dataset_options.num_samples")
    return keep
