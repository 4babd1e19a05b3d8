"""Datasets by name (`DATASETS`) or plug-in spec, as train/val/test tensors.

Built-in datasets (digits, fake, jsc) are split here (stratified, seeded) and standardized with
the training split's statistics. A user's dataset (a registered loader or a `file.py:load`
plug-in) is used exactly as it is returned: `(x, y)` validation data, or a dict of `train`,
`val` and optional `test` pairs.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitscout._core.registry import Registry
from bitscout._core.validate import unknown as unknown_name
from bitscout.data.containers import pair
from bitscout.data.splits import stratified_split, stratified_subsample
from bitscout.errors import ConfigError
from bitscout.zoo.plugins import call_plugin, display_name, is_spec, load_callable


@dataclass(frozen=True)
class Splits:
    """Float32 features [N, ...] and targets [N, ...] for each split; a user's dataset may
    have no train or test split (None)."""

    x_val: torch.Tensor
    y_val: torch.Tensor
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    num_features: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] = ()

    @property
    def has_train(self) -> bool:
        return self.x_train is not None

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


@dataclass(frozen=True)
class _Raw:
    """What a built-in loader hands back before splitting and standardizing."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    # Stratifying costs a Python-level pass per class; random benchmark data doesn't need it.
    stratify: bool = True


@dataclass(frozen=True)
class _Source:
    """Where and how to load; passed to every built-in loader, apart from its user options."""

    seed: int
    path: Path | None
    cache_dir: Path


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: a built-in loader `(source, **options) -> _Raw`, or a user's
    `(**options) -> (x, y) | {"train": ..., "val": ..., "test": ...}`."""

    loader: Callable[..., Any]
    builtin: bool = False


DATASETS: Registry[Dataset] = Registry("dataset")
_SPLIT_OPTIONS = {"val_fraction": 0.2, "test_fraction": 0.2}
USER_SPLITS = ("train", "val", "test")
DEFAULT_CACHE_DIR = Path("~/.cache/bitscout/openml")


def register_dataset(name: str, loader: Callable[..., Any]) -> None:
    """Make `loader(**options)` the dataset `name` (`dataset = "name"` in a config, options
    from `[dataset_options]`).

    Args:
        name: the name a config's `dataset` key uses.
        loader: returns `(x, y)` arrays or tensors of validation data, or a dict with a
            `val` pair and optionally `train` and `test` pairs; they are used as returned,
            not split or standardized (floating features become float32). It is given
            `seed` and the config's `dataset_path` when it takes parameters of those names.

    Raises:
        ValueError: `name` is already registered.
    """
    DATASETS.register(name)(Dataset(loader))


def _builtin(name: str) -> Callable[[Callable], Callable]:
    def add(loader: Callable) -> Callable:
        DATASETS.register(name)(Dataset(loader, builtin=True))
        return loader

    return add


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> Splits:
    """Dataset `name` (registered, or a plug-in spec `file.py:load`). Built-ins are split
    (stratified unless noted) and standardized on train statistics; options common to them:
    `val_fraction`, `test_fraction` (both default 0.2)."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError("seed", "must be an integer in [0, 2**32)", seed)
    if is_spec(name):
        return _user(load_callable(name, "dataset"), name, seed, path, options)
    dataset = DATASETS.get(name, "dataset")
    if not dataset.builtin:
        return _user(dataset.loader, name, seed, path, options)
    loader = dataset.loader
    own = _loader_options(loader)
    unknown = sorted(set(options) - own - set(_SPLIT_OPTIONS))
    if unknown:
        allowed = sorted(own | set(_SPLIT_OPTIONS))
        rule = unknown_name(f"option for dataset {name!r}", unknown[0], allowed)
        raise ConfigError(f"dataset_options.{unknown[0]}", rule, options[unknown[0]])
    val_fraction, test_fraction = _split_fractions(options)
    source = _Source(
        seed=int(seed),
        path=None if path is None else Path(path).expanduser(),
        cache_dir=Path(cache_dir or DEFAULT_CACHE_DIR).expanduser(),
    )
    raw = loader(source, **{k: v for k, v in options.items() if k in own})
    if raw.stratify:
        parts = stratified_split(raw.y, val_fraction, test_fraction, seed)
    else:
        parts = _permutation_split(len(raw.y), val_fraction, test_fraction, seed)
    return _to_splits(raw, *parts)


def _user(
    loader: Callable[..., Any], name: str, seed: int, path: str | Path | None, options: dict
) -> Splits:
    """A user's dataset: its loader called with the options (and `seed`, `path` when it takes
    them), its arrays used as returned."""
    params = _parameters(loader)
    extra: dict[str, Any] = {"seed": seed} if "seed" in params else {}
    if path is not None:
        if "path" not in params:
            raise ConfigError("dataset_path", f"dataset {name!r} takes no path", str(path))
        extra["path"] = str(path)
    return user_splits(call_plugin(loader, {**options, **extra}, name, "dataset"), name)


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def user_splits(result: Any, name: str) -> Splits:
    """What a user's loader returned, checked, as Splits: floating features as float32,
    targets as given."""
    key = f"dataset {display_name(name)!r}"
    if isinstance(result, Mapping):
        unknown = sorted(set(result) - set(USER_SPLITS))
        if unknown or "val" not in result:
            rule = "must return (x, y) or a dict with 'val' and optionally 'train' and 'test'"
            raise ConfigError(key, rule, sorted(result))
        parts = {k: pair(v, f"{key} {k!r}") for k, v in result.items()}
    else:
        parts = {"val": pair(result, key)}
    parts = {k: (x.float() if x.is_floating_point() else x, y) for k, (x, y) in parts.items()}
    ys = [y for _, y in parts.values()]
    classes = None
    if all(not (y.is_floating_point() or y.is_complex()) and y.dim() == 1 for y in ys):
        classes = int(max(int(y.max()) for y in ys)) + 1
    x_val = parts["val"][0]
    return Splits(
        x_val=x_val, y_val=parts["val"][1],
        x_train=parts.get("train", (None, None))[0], y_train=parts.get("train", (None, None))[1],
        x_test=parts.get("test", (None, None))[0], y_test=parts.get("test", (None, None))[1],
        num_features=x_val.shape[1] if x_val.dim() == 2 else None,
        num_classes=classes,
        class_names=tuple(str(i) for i in range(classes or 0)),
    )  # fmt: skip


def _loader_options(loader: Callable[..., Any]) -> set[str]:
    # A loader's keyword-only parameters are its user options, so declaring an option and
    # validating against it cannot drift apart.
    params = inspect.signature(loader).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _split_fractions(options: dict[str, Any]) -> tuple[float, float]:
    values = {k: options.get(k, default) for k, default in _SPLIT_OPTIONS.items()}
    for key, value in values.items():
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not ok or not 0 < value < 1:  # no float(): a huge TOML integer would overflow
            raise ConfigError(f"dataset_options.{key}", "must be a number in (0, 1)", value)
    val, test = float(values["val_fraction"]), float(values["test_fraction"])
    if val + test >= 1:
        rule = f"val_fraction + test_fraction must be < 1 (test_fraction is {test})"
        raise ConfigError("dataset_options.val_fraction", rule, val)
    return val, test


def _positive_int(key: str, value: object) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"dataset_options.{key}", "must be a positive integer", value)
    return int(value)


def _permutation_split(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_test, n_val = math.ceil(test_fraction * n), math.ceil(val_fraction * n)
    if n - n_test - n_val < 1:
        raise ConfigError("dataset_options", f"cannot split {n} samples: no training data left")
    # Separate stream from the data generator so the split does not shift with its draws.
    perm = np.random.default_rng((seed, 1)).permutation(n)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def _to_splits(raw: _Raw, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Splits:
    x_train = raw.x[train].astype(np.float64)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant features stay at 0 instead of dividing by zero

    def features(rows: np.ndarray) -> torch.Tensor:
        x = (raw.x[rows].astype(np.float64) - mean) / std
        return torch.from_numpy(x.astype(np.float32))

    def labels(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(raw.y[rows].astype(np.int64))

    return Splits(
        x_train=features(train), y_train=labels(train),
        x_val=features(val), y_val=labels(val),
        x_test=features(test), y_test=labels(test),
        num_features=raw.x.shape[1],
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
    )  # fmt: skip


def data_warnings(data: Splits) -> list[str]:
    """What makes results on `data` suspicious though not impossible: one class only (every
    model is then 100% accurate)."""
    y = data.y_train
    if y is None or y.is_floating_point() or not data.class_names:
        return []
    classes = torch.unique(y).tolist()
    if len(classes) >= 2:
        return []
    found = ", ".join(data.class_names[int(c)] for c in classes) or "none"
    return [
        f"the training split holds a single class ({found}) of the {data.num_classes} "
        "declared: every model predicts it, so accuracy is trivially 1.0"
    ]


def _no_path(name: str, path: Path | None) -> None:
    if path is not None:
        raise ConfigError("dataset_path", f"dataset {name!r} does not read a file", str(path))


@_builtin("digits")
def _digits(source: _Source) -> _Raw:
    _no_path("digits", source.path)
    x, y = digits_arrays()
    return _Raw(x=x, y=y, class_names=tuple(str(i) for i in range(10)))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, what `load_digits(return_X_y=True)` returns, read
    from the file it ships without importing scikit-learn (0.8 s of start-up)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("dataset", "digits needs scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


@_builtin("fake")
def _fake(
    source: _Source,
    *,
    num_samples: int = 1000,
    num_features: int = 16,
    num_classes: int = 5,
) -> _Raw:
    _no_path("fake", source.path)
    n = _positive_int("num_samples", num_samples)
    f = _positive_int("num_features", num_features)
    c = _positive_int("num_classes", num_classes)
    rng = np.random.default_rng(source.seed)
    x = rng.standard_normal((n, f), dtype=np.float32)
    # Labels follow a fixed linear map of the features so a model can beat chance; the
    # noise keeps the task from being perfectly separable.
    weights = rng.standard_normal((f, c), dtype=np.float32)
    logits = x @ weights + 0.5 * rng.standard_normal((n, c), dtype=np.float32)
    y = logits.argmax(axis=1)
    return _Raw(x=x, y=y, class_names=tuple(str(i) for i in range(c)), stratify=False)


@_builtin("jsc")
def _jsc(source: _Source, *, num_samples: int | None = None) -> _Raw:
    from bitscout.zoo import jsc  # pandas and the file readers: only for this dataset

    # Validate before reading: a typo should not cost an 830k-row download or parse.
    n = None if num_samples is None else _positive_int("num_samples", num_samples)
    path = source.path
    frame = jsc.read_file(path) if path is not None else _download_jsc(source.cache_dir)
    where = str(path) if path is not None else f"OpenML dataset {jsc.OPENML_ID}"
    x, y = jsc.arrays(frame, where)
    if n is not None:
        x, y = _subsample(x, y, n, source.seed)
    return _Raw(x=x, y=y, class_names=jsc.CLASSES)


def _download_jsc(cache_dir: Path) -> Any:
    from bitscout.zoo import jsc

    try:
        return jsc.fetch_frame(cache_dir)
    except Exception as exc:  # any fetch failure gets the same offline advice
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(
            "dataset_path",
            f"could not download the JSC data ({reason}); on a machine with internet, "
            f"download OpenML dataset {jsc.OPENML_ID} (hls4ml_lhc_jets_hlf) as CSV, ARFF or "
            'Parquet and set dataset_path = "/path/to/file" in the config',
        ) from exc


def _subsample(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n > len(y):
        raise ConfigError("dataset_options.num_samples", f"only {len(y)} rows available", n)
    if n == len(y):
        return x, y
    keep = stratified_subsample(y, n, seed)
    return x[keep], y[keep]
