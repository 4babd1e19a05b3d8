"""Tests for bitscout.zoo.data: splitting, standardizing and the dataset loaders (all offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bitscout.errors import ConfigError
from bitscout.zoo.data import Splits, load_dataset


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.numpy()}


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
    with pytest.raises(ConfigError, match=r"known: num_classes, num_features, num_samples"):
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


# scikit-learn is the reference: bitscout's splits must equal the ones it made with it before,
# or a checkpoint trained then would be scored on its own training rows.
def _labels(rng: np.random.Generator, classes: int, n: int) -> np.ndarray:
    weights = rng.dirichlet(np.full(classes, 0.7))
    y = rng.choice(classes, size=n, p=weights)
    y[: 6 * classes] = np.repeat(np.arange(classes), 6)  # every part can hold every class
    return rng.permutation(y)


@pytest.mark.parametrize("case", range(40))
def test_splits_equal_scikit_learn_row_for_row(case):
    from sklearn.model_selection import train_test_split

    from bitscout.data.splits import stratified_split, stratified_subsample

    rng = np.random.default_rng(case)
    classes, n = int(rng.integers(2, 11)), int(rng.integers(60, 3000))
    y, seed = _labels(rng, classes, n), int(rng.integers(0, 2**32))
    val_f, test_f = (float(f) for f in rng.uniform(0.08, 0.35, size=2))
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=test_f, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=val_f / (1 - test_f), stratify=y[rest],
                                  random_state=seed)  # fmt: skip
    got = stratified_split(y, val_f, test_f, seed)
    for ours, theirs in zip(got, (train, val, test), strict=True):
        np.testing.assert_array_equal(ours, theirs)  # same rows in the same order
    count = int(rng.integers(classes, n - classes))
    keep, _ = train_test_split(idx, train_size=count, stratify=y, random_state=seed)
    np.testing.assert_array_equal(stratified_subsample(y, count, seed), keep)


def test_a_class_of_one_cannot_be_split():
    from bitscout.data.splits import stratified_split

    with pytest.raises(ConfigError, match="a class has only 1 member"):
        stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 2]), 0.2, 0.2, 0)


def test_no_rows_cannot_be_split():
    from bitscout.data.splits import stratified_split

    with pytest.raises(ConfigError, match="cannot split 0 samples"):
        stratified_split(np.array([], dtype=np.int64), 0.2, 0.2, 0)


@pytest.mark.parametrize("layout", ["openml", "mase"])
def test_a_jsc_csv_with_a_header_and_no_rows_is_one_line(tmp_path: Path, layout: str) -> None:
    from bitscout.zoo import jsc

    names = jsc.FEATURES + ("class",) if layout == "openml" else jsc.MASE_FEATURES + jsc.ONE_HOT
    path = tmp_path / "jets.csv"
    path.write_text(",".join(names) + "\n")
    with pytest.raises(ConfigError, match=r"dataset_path: holds no rows \(a header only\)"):
        load_dataset("jsc", path=path)
