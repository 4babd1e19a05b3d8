"""The LHC jet-substructure data (JSC) in the layouts it is published in.

- OpenML 42468 (`hls4ml_lhc_jets_hlf`, 830,000 rows) as CSV, ARFF or Parquet, or through
  scikit-learn's `fetch_openml`: the 16 features below and a nominal `class` (g, q, w, z, t),
  as the hls4ml tutorial prints them.
- MASE's layout (`chop/dataset/physical/jsc.py`): the same features with a `j_` prefix, the
  target as one-hot columns `j_g, j_q, j_w, j_z, j_t` (or a `class` column), in CSV, ARFF,
  Parquet or MASE's own HDF5 file (`processed-pythia82-...-truth.z`, dataset `t_allpar_new`).

Every layout loads to the same arrays; classes are numbered as MASE numbers them (the argmax
of its one-hot columns): g=0, q=1, w=2, z=3, t=4.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from bitscout.errors import ConfigError

OPENML_ID = 42468
FEATURES = (
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt",
    "d2_b1_mmdt", "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt",
    "m2_b2_mmdt", "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt", "multiplicity",
)  # fmt: skip
MASE_FEATURES = tuple(f"j_{name}" for name in FEATURES)
CLASSES = ("g", "q", "w", "z", "t")
ONE_HOT = tuple(f"j_{c}" for c in CLASSES)
TARGET = "class"
MASE_DATASET = "t_allpar_new"  # the HDF5 dataset MASE reads


def read_file(path: Path) -> pd.DataFrame:
    """A JSC file as a frame with bare column names; the layout is checked by `arrays`."""
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path], pd.DataFrame]] = {
        ".csv": pd.read_csv, ".parquet": _read_parquet, ".arff": _read_arff,
        ".h5": _read_hdf5, ".hdf5": _read_hdf5, ".z": _read_hdf5,
    }  # fmt: skip
    if suffix not in readers:
        rule = f"unsupported file type {suffix or '(none)'!r}; use .csv, .parquet, .arff or .h5"
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
    # Exports differ in quoting header names ('zlogz' vs zlogz); compare bare names.
    frame.columns = [str(c).strip().strip("'\"") for c in frame.columns]
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        rule = "reading .parquet needs pyarrow: pip install pyarrow"
        raise ConfigError("dataset_path", rule, str(path)) from exc


def _read_arff(path: Path) -> pd.DataFrame:
    from scipy.io import arff  # scipy comes with scikit-learn

    data, _ = arff.loadarff(path)
    frame = pd.DataFrame(data)
    for column in frame.columns:
        if frame[column].dtype == object:  # nominal values come back as bytes
            frame[column] = frame[column].str.decode("utf-8")
    return frame


def _read_hdf5(path: Path) -> pd.DataFrame:
    try:
        import h5py
    except ImportError as exc:
        rule = "reading MASE's HDF5 file needs h5py: pip install h5py"
        raise ConfigError("dataset_path", rule, str(path)) from exc
    with h5py.File(path, "r") as f:
        if MASE_DATASET not in f:
            rule = f"HDF5 file without MASE's {MASE_DATASET!r} dataset (has: {', '.join(f)})"
            raise ConfigError("dataset_path", rule, str(path))
        return pd.DataFrame.from_records(f[MASE_DATASET][()])


def arrays(frame: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, 16] (float64) and class indices [N] of a frame in either layout."""
    names = _feature_columns(frame, where)
    if frame.empty:
        raise ConfigError("dataset_path", "holds no rows (a header only)", where)
    try:
        x = frame[list(names)].apply(pd.to_numeric).to_numpy(np.float64)
    except (ValueError, TypeError) as exc:
        raise ConfigError("dataset_path", f"non-numeric feature values ({exc})", where) from exc
    kinds = (("missing values (empty or NaN)", np.isnan(x)), ("infinite values", np.isinf(x)))
    for kind, bad in kinds:
        if bad.any():
            column = names[int(np.flatnonzero(bad.any(axis=0))[0])]
            rule = f"feature column {column} holds {kind} in {int(bad.any(axis=1).sum())} rows"
            raise ConfigError("dataset_path", rule, where)
    if TARGET in frame.columns:
        return x, _labels(frame[TARGET], where)
    return x, _one_hot(frame, where)


def _feature_columns(frame: pd.DataFrame, where: str) -> tuple[str, ...]:
    for names in (FEATURES, MASE_FEATURES):
        if all(c in frame.columns for c in names):
            return names
    missing = [c for c in FEATURES if c not in frame.columns]
    rule = (
        f"missing feature columns: {', '.join(missing)} (OpenML 42468 names them "
        f"{FEATURES[0]}, ..., {FEATURES[-1]}; MASE's layout with a j_ prefix)"
    )
    raise ConfigError("dataset_path", rule, where)


def _labels(target: pd.Series, where: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(target):
        # Exports that already store the class index, numbered as CLASSES.
        y = target.to_numpy()
        if not np.isin(y, np.arange(len(CLASSES))).all():
            bad = sorted(set(np.unique(y)) - set(range(len(CLASSES))))[:5]
            raise ConfigError("dataset_path", f"class indices must be 0..4, found {bad}", where)
        return y.astype(np.int64)
    names = target.astype(str).str.strip().str.strip("'\"").str.lower()
    index = {name: i for i, name in enumerate(CLASSES)}
    y = names.map(index)
    if y.isna().any():
        bad = sorted(set(names[y.isna()]))[:5]
        rule = f"class must be one of {', '.join(CLASSES)}, found {bad}"
        raise ConfigError("dataset_path", rule, where)
    return y.to_numpy(np.int64)


def _one_hot(frame: pd.DataFrame, where: str) -> np.ndarray:
    missing = [c for c in ONE_HOT if c not in frame.columns]
    if missing:
        rule = f"no target: neither a {TARGET!r} column nor MASE's one-hot {', '.join(ONE_HOT)}"
        raise ConfigError("dataset_path", rule, where)
    hot = frame[list(ONE_HOT)].apply(pd.to_numeric).to_numpy(np.float64)
    ones = (hot == 1).sum(axis=1)
    if not (((hot == 0) | (hot == 1)).all() and (ones == 1).all()):
        bad = int(np.flatnonzero(ones != 1)[0]) if (ones != 1).any() else 0
        rule = f"one-hot columns {', '.join(ONE_HOT)} must hold one 1 per row (row {bad})"
        raise ConfigError("dataset_path", rule, where)
    return hot.argmax(axis=1).astype(np.int64)


def fetch_frame(cache_dir: Path) -> pd.DataFrame:
    """OpenML 42468 through scikit-learn (downloaded once into `cache_dir`)."""
    from sklearn.datasets import fetch_openml

    bunch = fetch_openml(data_id=OPENML_ID, as_frame=True, data_home=str(cache_dir),
                         parser="auto")  # fmt: skip
    return bunch.frame
