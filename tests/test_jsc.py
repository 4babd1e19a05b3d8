"""The JSC data in every layout it is published in loads to the same arrays.

Files are written here in OpenML 42468's layout (16 bare feature names, a nominal `class`) as
CSV, ARFF and Parquet, as `fetch_openml` returns it (a categorical `class`), and in MASE's
layout (`j_`-prefixed features; `class` or one-hot `j_g, j_q, j_w, j_z, j_t`) as CSV and as
MASE's HDF5 file with its `t_allpar_new` dataset. The expected class indices are written here
independently: MASE's one-hot order, g=0, q=1, w=2, z=3, t=4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bitscout.errors import ConfigError
from bitscout.zoo import jsc
from bitscout.zoo.data import load_dataset

OPENML_NAMES = (
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt",
    "d2_b1_mmdt", "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt", "m2_b2_mmdt",
    "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt", "multiplicity",
)  # fmt: skip
LETTERS = ("g", "q", "w", "z", "t")  # in MASE's one-hot order
N = 500


def _values(seed: int = 1) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    # Three decimals so CSV and ARFF text parse to the very same doubles.
    x = np.round(rng.normal(size=(N, 16)) * 10, 3)
    letters = [LETTERS[(i * 7) % 5] for i in range(N)]
    return x, letters


def _openml_frame() -> pd.DataFrame:
    x, letters = _values()
    frame = pd.DataFrame(x, columns=list(OPENML_NAMES))
    frame["class"] = letters
    return frame


def _mase_frame(one_hot: bool) -> pd.DataFrame:
    x, letters = _values()
    frame = pd.DataFrame(x, columns=[f"j_{n}" for n in OPENML_NAMES])
    if one_hot:
        for letter in LETTERS:
            frame[f"j_{letter}"] = [1.0 if c == letter else 0.0 for c in letters]
    else:
        frame["class"] = letters
    return frame


def _write_arff(frame: pd.DataFrame, path: Path, quote: bool) -> None:
    q = "'" if quote else ""
    lines = ["@RELATION hls4ml_lhc_jets_hlf", ""]
    lines += [f"@ATTRIBUTE {q}{name}{q} REAL" for name in OPENML_NAMES]
    lines += ["@ATTRIBUTE class {g,q,w,z,t}", "", "@DATA"]
    for row in frame.itertuples(index=False):
        *features, label = row
        lines.append(",".join(f"{v:.3f}" for v in features) + f",{label}")
    path.write_text("\n".join(lines) + "\n")


def _write_hdf5(frame: pd.DataFrame, path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    records = frame.to_records(index=False)
    with h5py.File(path, "w") as f:
        f.create_dataset(jsc.MASE_DATASET, data=records)


def _layouts(tmp_path: Path) -> dict[str, Path]:
    files = {}
    openml = _openml_frame()
    files["openml.csv"] = tmp_path / "openml.csv"
    openml.to_csv(files["openml.csv"], index=False, float_format="%.3f")
    for quote in (False, True):
        files[f"openml-{quote}.arff"] = tmp_path / f"openml-{quote}.arff"
        _write_arff(openml, files[f"openml-{quote}.arff"], quote)
    files["openml.parquet"] = tmp_path / "openml.parquet"
    openml.to_parquet(files["openml.parquet"])
    for one_hot in (False, True):
        files[f"mase-{one_hot}.csv"] = tmp_path / f"mase-{one_hot}.csv"
        _mase_frame(one_hot).to_csv(files[f"mase-{one_hot}.csv"], index=False, float_format="%.3f")
    files["mase.z"] = (
        tmp_path / "processed-pythia82-lhc13-all-pt1-50k-r1_h022_e0175_t220_nonu_truth.z"
    )
    _write_hdf5(_mase_frame(one_hot=True), files["mase.z"])
    return files


def test_every_layout_loads_to_the_same_arrays(tmp_path):
    _, letters = _values()
    expected_y = torch.tensor([LETTERS.index(c) for c in letters])
    reference = None
    for name, path in _layouts(tmp_path).items():
        s = load_dataset("jsc", path=path, seed=2)
        assert s.num_features == 16 and s.num_classes == 5, name
        assert s.class_names == LETTERS, name
        if reference is None:
            reference = s
            # the split holds every row once: check the labels against the file's own
            assert len(s.y_train) + len(s.y_val) + len(s.y_test) == N
            assert sorted(torch.cat([s.y_train, s.y_val, s.y_test]).tolist()) == sorted(
                expected_y.tolist()
            )
            continue
        for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            got, want = getattr(s, part), getattr(reference, part)
            # Parquet and HDF5 keep the exact doubles; CSV text may parse one ulp away
            assert (
                torch.allclose(got, want, atol=1e-6) if part[0] == "x" else torch.equal(got, want)
            ), (name, part)


def test_fetch_openml_frame_with_a_categorical_class(tmp_path, monkeypatch):
    """What `fetch_openml(data_id=42468, as_frame=True).frame` looks like: the features and a
    `class` of dtype category (scikit-learn >= 1.2 sorts its categories g, q, t, w, z)."""
    frame = _openml_frame()
    frame["class"] = pd.Categorical(frame["class"], categories=["g", "q", "t", "w", "z"])
    monkeypatch.setattr(jsc, "fetch_frame", lambda cache_dir: frame)
    fetched = load_dataset("jsc", cache_dir=tmp_path, seed=2)
    path = tmp_path / "openml.csv"
    _openml_frame().to_csv(path, index=False)
    from_file = load_dataset("jsc", path=path, seed=2)
    assert torch.equal(fetched.y_val, from_file.y_val)
    assert torch.allclose(fetched.x_val, from_file.x_val)


def test_the_class_index_order_is_mases(tmp_path):
    frame = _openml_frame().iloc[:100].copy()
    frame["class"] = ["w"] * 20 + ["t"] * 60 + ["g"] * 20
    numeric = frame.assign(**{"class": frame["class"].map(LETTERS.index)})
    for i, variant in enumerate((frame, frame.assign(**{"class": "'" + frame["class"] + "'"}),
                                 numeric)):  # fmt: skip
        path = tmp_path / f"v{i}.csv"
        variant.to_csv(path, index=False)
        s = load_dataset("jsc", path=path, seed=0)
        labels = torch.cat([s.y_train, s.y_val, s.y_test])
        assert torch.bincount(labels, minlength=5).tolist() == [20, 0, 20, 0, 60]


def test_num_samples_subsample(tmp_path):
    path = tmp_path / "jsc.csv"
    frame = _openml_frame()
    frame["class"] = [LETTERS[i % 5] for i in range(N)]
    frame.to_csv(path, index=False)
    s = load_dataset("jsc", path=path, num_samples=200, seed=0)
    labels = torch.cat([s.y_train, s.y_val, s.y_test])
    assert torch.bincount(labels).tolist() == [40] * 5
    with pytest.raises(ConfigError, match=r"dataset_options\.num_samples"):
        load_dataset("jsc", path=path, num_samples=501)


def test_offline_error(monkeypatch, tmp_path):
    def offline(cache_dir: Path) -> pd.DataFrame:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(jsc, "fetch_frame", offline)
    with pytest.raises(ConfigError) as info:
        load_dataset("jsc", cache_dir=tmp_path)
    assert info.value.key == "dataset_path"
    assert "42468" in str(info.value) and "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset_path.*no such file"):
        load_dataset("jsc", path=tmp_path / "missing.csv")
    wrong = tmp_path / "jsc.txt"
    wrong.write_text("x")
    with pytest.raises(ConfigError, match=r"dataset_path.*unsupported"):
        load_dataset("jsc", path=wrong)
    partial = tmp_path / "partial.csv"
    _openml_frame().drop(columns=["mass_mmdt"]).to_csv(partial, index=False)
    with pytest.raises(ConfigError, match=r"missing feature columns: mass_mmdt \(OpenML"):
        load_dataset("jsc", path=partial)
    no_target = tmp_path / "no_target.csv"
    _openml_frame().drop(columns=["class"]).to_csv(no_target, index=False)
    with pytest.raises(ConfigError, match=r"neither a 'class' column nor MASE's one-hot"):
        load_dataset("jsc", path=no_target)
    bad_labels = tmp_path / "labels.csv"
    _openml_frame().assign(**{"class": "x"}).to_csv(bad_labels, index=False)
    with pytest.raises(ConfigError, match=r"class must be one of g, q, w, z, t"):
        load_dataset("jsc", path=bad_labels)
    two_hot = _mase_frame(one_hot=True)
    two_hot.loc[3, "j_g"] = 1.0  # row 3 is a q jet: now two classes
    path = tmp_path / "two_hot.csv"
    two_hot.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"one 1 per row \(row 3\)"):
        load_dataset("jsc", path=path)
