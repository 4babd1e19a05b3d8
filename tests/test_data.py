"""Tests for bitscout.zoo.data: splitting, standardizing and the dataset loaders (all offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bitscout.errors import ConfigError
from bitscout.zoo import data
from bitscout.zoo.data import JSC_CLASSES, JSC_FEATURES, Splits, load_dataset


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.numpy()}


def _jsc_frame(n: int = 500, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Three decimals so CSV and ARFF text parse to the very same doubles.
    values = np.round(rng.normal(size=(n, len(JSC_FEATURES))) * 10, 3)
    frame = pd.DataFrame(values, columns=list(JSC_FEATURES))
    frame["class"] = [JSC_CLASSES[i % 5] for i in range(n)]
    return frame


def _write_arff(frame: pd.DataFrame, path: Path) -> None:
    lines = ["@RELATION hls4ml_lhc_jets_hlf", ""]
    lines += [f"@ATTRIBUTE {name} NUMERIC" for name in JSC_FEATURES]
    lines += ["@ATTRIBUTE class {g,q,t,w,z}", "", "@DATA"]
    for row in frame.itertuples(index=False):
        *features, label = row
        lines.append(",".join(f"{v:.3f}" for v in features) + f",{label}")
    path.write_text("\n".join(lines) + "\n")


def _all_x(s: Splits) -> torch.Tensor:
    return torch.cat([s.x_train, s.x_val, s.x_test])


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_dataset("digits", seed=0)


def test_digits_shapes(digits: Splits) -> None:
    total = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert total == 1797
    assert digits.num_features == 64 and digits.x_train.shape[1] == 64
    assert digits.num_classes == 10
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert set(digits.y_train.tolist()) == set(range(10))


def test_digits_splits_disjoint_and_sized(digits: Splits) -> None:
    train, val, test = _rows(digits.x_train), _rows(digits.x_val), _rows(digits.x_test)
    # load_digits has no duplicate images, so distinct rows mean distinct samples.
    assert len(train) == len(digits.x_train)
    assert not train & val and not train & test and not val & test
    assert abs(len(digits.y_val) - 0.2 * 1797) <= 2
    assert abs(len(digits.y_test) - 0.2 * 1797) <= 2


def test_custom_fractions_and_stratification() -> None:
    s = load_dataset("digits", seed=3, val_fraction=0.1, test_fraction=0.3)
    assert abs(len(s.y_val) - 180) <= 2 and abs(len(s.y_test) - 539) <= 2
    # Stratified: every class keeps roughly its share in the test split.
    counts = np.bincount(s.y_test.numpy(), minlength=10)
    assert counts.min() >= 50


def test_same_seed_same_splits_different_seed_differs(digits: Splits) -> None:
    again = load_dataset("digits", seed=0)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(digits, name), getattr(again, name))
    other = load_dataset("digits", seed=1)
    assert not torch.equal(digits.y_test, other.y_test) or not torch.equal(
        digits.x_test, other.x_test
    )


def test_train_standardized_with_train_stats_only() -> None:
    from sklearn.datasets import load_digits

    s = load_dataset("digits", seed=0)
    x = s.x_train.double()
    raw_std = load_digits().data.std(axis=0)
    varying = x.std(dim=0, unbiased=False) > 0
    assert torch.allclose(x.mean(dim=0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x[:, varying].std(dim=0, unbiased=False), torch.ones(1).double(),
                          atol=1e-4)  # fmt: skip
    # Constant raw columns (border pixels) stay finite at exactly 0.
    assert (raw_std == 0).any()
    assert torch.isfinite(_all_x(s)).all()
    # Val/test use train statistics, so their means are not forced to 0 exactly.
    assert not torch.allclose(s.x_val.mean(dim=0), torch.zeros(64), atol=1e-6)


def test_jsc_csv_and_arff_agree(tmp_path: Path) -> None:
    frame = _jsc_frame()
    csv, arff = tmp_path / "jsc.csv", tmp_path / "jsc.arff"
    frame.to_csv(csv, index=False, float_format="%.3f")
    _write_arff(frame, arff)
    a = load_dataset("jsc", path=csv, seed=2)
    b = load_dataset("jsc", path=str(arff), seed=2)
    assert a.num_features == 16 and a.num_classes == 5
    assert a.class_names == ("g", "q", "t", "w", "z")
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 500
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_jsc_class_mapping_and_quoted_or_numeric_labels(tmp_path: Path) -> None:
    frame = _jsc_frame(n=100)
    frame["class"] = ["t"] * 100  # one class only is enough to read the mapping
    frame.loc[:19, "class"] = "w"
    frame.loc[20:39, "class"] = "g"
    quoted = frame.assign(**{"class": "'" + frame["class"] + "'"})
    numeric = frame.assign(**{"class": frame["class"].map(JSC_CLASSES.index)})
    expected = None
    for i, variant in enumerate((frame, quoted, numeric)):
        path = tmp_path / f"v{i}.csv"
        variant.to_csv(path, index=False)
        s = load_dataset("jsc", path=path, seed=0)
        labels = torch.cat([s.y_train, s.y_val, s.y_test])
        assert torch.bincount(labels, minlength=5).tolist() == [20, 0, 60, 20, 0]
        if expected is not None:
            assert torch.equal(s.y_test, expected)
        expected = s.y_test


def test_jsc_num_samples_subsample(tmp_path: Path) -> None:
    path = tmp_path / "jsc.csv"
    _jsc_frame().to_csv(path, index=False)
    s = load_dataset("jsc", path=path, num_samples=200, seed=0)
    labels = torch.cat([s.y_train, s.y_val, s.y_test])
    assert len(labels) == 200
    assert torch.bincount(labels).tolist() == [40] * 5
    with pytest.raises(ConfigError, match=r"dataset_options\.num_samples"):
        load_dataset("jsc", path=path, num_samples=501)
    with pytest.raises(ConfigError, match=r"dataset_options\.num_samples"):
        load_dataset("jsc", path=tmp_path / "absent.csv", num_samples=0)


def test_jsc_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    frame = _jsc_frame()
    csv, parquet = tmp_path / "jsc.csv", tmp_path / "jsc.parquet"
    frame.to_csv(csv, index=False, float_format="%.3f")
    frame.to_parquet(parquet)
    a, b = load_dataset("jsc", path=csv), load_dataset("jsc", path=parquet)
    # Parquet keeps the exact doubles; CSV text may parse one ulp away.
    assert torch.allclose(a.x_train, b.x_train, atol=1e-6) and torch.equal(a.y_test, b.y_test)


def test_jsc_offline_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def offline(cache_dir: Path) -> pd.DataFrame:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data, "_fetch_openml_jsc", offline)
    with pytest.raises(ConfigError) as info:
        load_dataset("jsc", cache_dir=tmp_path)
    message = str(info.value)
    assert info.value.key == "dataset_path"
    assert "42468" in message and "dataset_path" in message and "\n" not in message


def test_jsc_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset_path.*no such file"):
        load_dataset("jsc", path=tmp_path / "missing.csv")
    wrong = tmp_path / "jsc.txt"
    wrong.write_text("x")
    with pytest.raises(ConfigError, match=r"dataset_path.*unsupported"):
        load_dataset("jsc", path=wrong)
    partial = tmp_path / "partial.csv"
    _jsc_frame(n=50).drop(columns=["j_mass_mmdt", "class"]).to_csv(partial, index=False)
    with pytest.raises(ConfigError, match=r"dataset_path.*j_mass_mmdt, class"):
        load_dataset("jsc", path=partial)
    bad_labels = tmp_path / "labels.csv"
    _jsc_frame(n=50).assign(**{"class": "x"}).to_csv(bad_labels, index=False)
    with pytest.raises(ConfigError, match=r"dataset_path.*class must be one of"):
        load_dataset("jsc", path=bad_labels)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"val_fraction": 0}, "dataset_options.val_fraction"),
        ({"test_fraction": 1.2}, "dataset_options.test_fraction"),
        ({"val_fraction": "0.1"}, "dataset_options.val_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "dataset_options.val_fraction"),
        ({"batch": 3}, "dataset_options.batch"),
    ],
)
def test_bad_options(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("digits", **options)
    assert info.value.key == key


def test_unknown_option_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"allowed: num_classes, num_features, num_samples"):
        load_dataset("fake", num_layers=2)


def test_fake_shapes_determinism_and_learnable() -> None:
    s = load_dataset("fake", seed=5, num_samples=2000, num_features=8, num_classes=3)
    assert (s.num_features, s.num_classes) == (8, 3)
    assert s.x_train.shape == (1200, 8) and s.x_val.shape == (400, 8)
    assert s.x_test.shape == (400, 8) and s.y_test.shape == (400,)
    assert set(torch.cat([s.y_train, s.y_test]).tolist()) == {0, 1, 2}
    train, test = _rows(s.x_train), _rows(s.x_test)
    assert len(train) == 1200 and not train & test
    again = load_dataset("fake", seed=5, num_samples=2000, num_features=8, num_classes=3)
    assert torch.equal(s.x_train, again.x_train) and torch.equal(s.y_val, again.y_val)
    other = load_dataset("fake", seed=6, num_samples=2000, num_features=8, num_classes=3)
    assert not torch.equal(s.x_train, other.x_train)
    # A least-squares linear classifier fit on train must beat chance (1/3) on test.
    onehot = torch.nn.functional.one_hot(s.y_train, 3).double()
    design = torch.cat([s.x_train.double(), torch.ones(1200, 1).double()], dim=1)
    weights = torch.linalg.lstsq(design, onehot).solution
    test_design = torch.cat([s.x_test.double(), torch.ones(400, 1).double()], dim=1)
    accuracy = ((test_design @ weights).argmax(1) == s.y_test).double().mean().item()
    assert accuracy > 0.6


@pytest.mark.parametrize("option", ["num_samples", "num_features", "num_classes"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_fake_bad_sizes(option: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("fake", **{option: value})
    assert info.value.key == f"dataset_options.{option}"


def test_path_rejected_for_builtin_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset_path"):
        load_dataset("digits", path=tmp_path / "x.csv")


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"digits") as info:
        load_dataset("mnist")
    assert info.value.key == "dataset"
    assert "fake" in str(info.value) and "jsc" in str(info.value)
