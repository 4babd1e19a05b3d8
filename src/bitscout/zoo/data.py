"""Datasets as standardized train/val/test tensors, looked up by name in `DATASETS`."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bitscout.errors import ConfigError
from bitscout.registry import Registry


@dataclass(frozen=True)
class Splits:
    """Standardized float32 features [N, F] and int64 labels [N] for each split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_features: int
    num_classes: int
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _Raw:
    """What a dataset loader hands back before splitting and standardizing."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    # Stratifying costs a Python-level pass per class; random benchmark data doesn't need it.
    stratify: bool = True


@dataclass(frozen=True)
class _Source:
    """Where and how to load; passed to every loader, separate from its user options."""

    seed: int
    path: Path | None
    cache_dir: Path


Loader = Callable[..., _Raw]
DATASETS: Registry[Loader] = Registry("dataset")
_SPLIT_OPTIONS = {"val_fraction": 0.2, "test_fraction": 0.2}

JSC_OPENML_ID = 42468
JSC_FEATURES = (
    "j_zlogz", "j_c1_b0_mmdt", "j_c1_b1_mmdt", "j_c1_b2_mmdt", "j_c2_b1_mmdt", "j_c2_b2_mmdt",
    "j_d2_b1_mmdt", "j_d2_b2_mmdt", "j_d2_a1_b1_mmdt", "j_d2_a1_b2_mmdt", "j_m2_b1_mmdt",
    "j_m2_b2_mmdt", "j_n2_b1_mmdt", "j_n2_b2_mmdt", "j_mass_mmdt", "j_multiplicity",
)  # fmt: skip
JSC_TARGET = "class"
JSC_CLASSES = ("g", "q", "t", "w", "z")
DEFAULT_CACHE_DIR = Path("~/.cache/bitscout/openml")


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> Splits:
    """Load dataset `name`, split it (stratified unless noted) and standardize on train stats.

    Options common to all datasets: `val_fraction`, `test_fraction` (both default 0.2).
    """
    loader = DATASETS.get(name, "dataset")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError("seed", "must be an integer in [0, 2**32)", seed)
    own = _loader_options(loader)
    unknown = sorted(set(options) - own - set(_SPLIT_OPTIONS))
    if unknown:
        allowed = ", ".join(sorted(own | set(_SPLIT_OPTIONS)))
        rule = f"unknown option for dataset {name!r}; allowed: {allowed}"
        raise ConfigError(f"dataset_options.{unknown[0]}", rule, options[unknown[0]])
    val_fraction, test_fraction = _split_fractions(options)
    source = _Source(
        seed=int(seed),
        path=None if path is None else Path(path).expanduser(),
        cache_dir=Path(cache_dir or DEFAULT_CACHE_DIR).expanduser(),
    )
    raw = loader(source, **{k: v for k, v in options.items() if k in own})
    if raw.stratify:
        parts = _stratified_split(raw.y, val_fraction, test_fraction, seed)
    else:
        parts = _permutation_split(len(raw.y), val_fraction, test_fraction, seed)
    return _to_splits(raw, *parts)


def _loader_options(loader: Loader) -> set[str]:
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


def _stratified_split(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # 0.7 s to import: only when used

    idx = np.arange(len(y))
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
        # Rescale so val is `val_fraction` of the whole set, not of what test left over.
        train, val = train_test_split(
            rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest], random_state=seed
        )
    except ValueError as exc:  # too few samples per class for the requested fractions
        raise ConfigError("dataset_options", f"cannot split {len(y)} samples: {exc}") from exc
    return train, val, test


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
    classes = torch.unique(data.y_train).tolist()
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


@DATASETS.register("digits")
def _digits(source: _Source) -> _Raw:
    from sklearn.datasets import load_digits

    _no_path("digits", source.path)
    x, y = load_digits(return_X_y=True)
    return _Raw(x=x, y=y, class_names=tuple(str(i) for i in range(10)))


@DATASETS.register("fake")
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


@DATASETS.register("jsc")
def _jsc(source: _Source, *, num_samples: int | None = None) -> _Raw:
    # Validate before reading: a typo should not cost an 830k-row download or parse.
    n = None if num_samples is None else _positive_int("num_samples", num_samples)
    path = source.path
    frame = _read_jsc_file(path) if path is not None else _download_jsc(source.cache_dir)
    where = str(path) if path is not None else f"OpenML dataset {JSC_OPENML_ID}"
    x, y = _jsc_arrays(frame, where)
    if n is not None:
        x, y = _subsample(x, y, n, source.seed)
    return _Raw(x=x, y=y, class_names=JSC_CLASSES)


def _fetch_openml_jsc(cache_dir: Path) -> pd.DataFrame:
    """Download (once; then from `cache_dir`) the JSC frame. Tests monkeypatch this."""
    from sklearn.datasets import fetch_openml

    bunch = fetch_openml(data_id=JSC_OPENML_ID, as_frame=True, data_home=str(cache_dir),
                         parser="auto")  # fmt: skip
    return bunch.frame


def _download_jsc(cache_dir: Path) -> pd.DataFrame:
    try:
        return _fetch_openml_jsc(cache_dir)
    except Exception as exc:  # any fetch failure gets the same offline advice
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(
            "dataset_path",
            f"could not download the JSC data ({reason}); on a machine with internet, "
            f"download OpenML dataset {JSC_OPENML_ID} (hls4ml_lhc_jets_hlf) as CSV, ARFF or "
            'Parquet and set dataset_path = "/path/to/file" in the config',
        ) from exc


def _read_jsc_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path], pd.DataFrame]] = {
        ".csv": pd.read_csv,
        ".parquet": _read_parquet,
        ".arff": _read_arff,
    }
    if suffix not in readers:
        rule = f"unsupported file type {suffix or '(none)'!r}; use .csv, .parquet or .arff"
        raise ConfigError("dataset_path", rule, str(path))
    if not path.is_file():
        raise ConfigError("dataset_path", "no such file", str(path))
    try:
        frame = readers[suffix](path)
    except ConfigError:
        raise
    except Exception as exc:  # readers raise many types; all mean unreadable
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError("dataset_path", f"cannot read file ({reason})", str(path)) from exc
    # Exports differ in quoting header names ('j_zlogz' vs j_zlogz); compare bare names.
    frame.columns = [str(c).strip().strip("'\"") for c in frame.columns]
    missing = [c for c in (*JSC_FEATURES, JSC_TARGET) if c not in frame.columns]
    if missing:
        raise ConfigError("dataset_path", f"missing columns: {', '.join(missing)}", str(path))
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        rule = "reading .parquet needs pyarrow: pip install pyarrow"
        raise ConfigError("dataset_path", rule, str(path)) from exc


def _read_arff(path: Path) -> pd.DataFrame:
    # scipy ships with scikit-learn; if it is missing, the caller reports the ImportError.
    from scipy.io import arff

    data, _ = arff.loadarff(path)
    frame = pd.DataFrame(data)
    for column in frame.columns:
        if frame[column].dtype == object:  # nominal values come back as bytes
            frame[column] = frame[column].str.decode("utf-8")
    return frame


def _jsc_arrays(frame: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = frame[list(JSC_FEATURES)].apply(pd.to_numeric).to_numpy(np.float64)
    except (ValueError, TypeError) as exc:
        raise ConfigError("dataset_path", f"non-numeric feature values ({exc})", where) from exc
    kinds = (("missing values (empty or NaN)", np.isnan(x)), ("infinite values", np.isinf(x)))
    for kind, bad in kinds:
        if bad.any():
            column = JSC_FEATURES[int(np.flatnonzero(bad.any(axis=0))[0])]
            rule = f"feature column {column} holds {kind} in {int(bad.any(axis=1).sum())} rows"
            raise ConfigError("dataset_path", rule, where)
    return x, _jsc_labels(frame[JSC_TARGET], where)


def _jsc_labels(target: pd.Series, where: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(target):
        # Some exports already store the class index 0..4 instead of the letter.
        y = target.to_numpy()
        if not np.isin(y, np.arange(len(JSC_CLASSES))).all():
            bad = sorted(set(np.unique(y)) - set(range(len(JSC_CLASSES))))[:5]
            raise ConfigError("dataset_path", f"class indices must be 0..4, found {bad}", where)
        return y.astype(np.int64)
    names = target.astype(str).str.strip().str.strip("'\"").str.lower()
    index = {name: i for i, name in enumerate(JSC_CLASSES)}
    y = names.map(index)
    if y.isna().any():
        bad = sorted(set(names[y.isna()]))[:5]
        allowed = ", ".join(JSC_CLASSES)
        raise ConfigError("dataset_path", f"class must be one of {allowed}, found {bad}", where)
    return y.to_numpy(np.int64)


def _subsample(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n > len(y):
        raise ConfigError("dataset_options.num_samples", f"only {len(y)} rows available", n)
    if n == len(y):
        return x, y
    from sklearn.model_selection import train_test_split  # slow to import: only when used

    try:
        keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    except ValueError as exc:  # fewer rows requested than classes to stratify over
        raise ConfigError("dataset_options.num_samples", str(exc), n) from exc
    return x[keep], y[keep]
