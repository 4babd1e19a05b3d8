"""What the end-to-end search tests (tests/test_search*.py) share: the 48-candidate seed space
on the `fake` dataset shaped like the jet data (16 features, 5 classes), a TOML writer for
configs, readers of a run's outputs, jsc-tiny written out, and the module-scoped fixtures that
train one float checkpoint per test module and evaluate every candidate independently.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from bitscout import quantize_model
from bitscout.cli import main
from bitscout.zoo.data import load_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jsc_tiny_lab3.toml"
SEED = 42
DATASET_OPTIONS = {"num_samples": 2000, "num_features": 16, "num_classes": 5}
DIMS = ("seq_blocks_2/data_in_width", "seq_blocks_2/weight_width", "seq_blocks_2/bias_width")
CHOICES = ([4, 8, 16], [2, 4, 8, 16], [2, 4, 8, 16])
ALL_CONFIGS = list(itertools.product(*CHOICES))  # mixed radix, last dimension fastest


# --- helpers ------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(doc: dict, prefix: str = "") -> str:
    """A small TOML writer: scalars first, then one [header] per sub-table."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            text += f"\n[{name}]\n" + to_toml(v, name)
    return text


def base_doc() -> dict:
    """The seed experiment (examples/jsc_tiny_lab3.toml) on the fake dataset, trained briefly."""
    example = tomllib.loads(EXAMPLE.read_text())
    return {
        "model": "jsc-tiny",
        "dataset": "fake",
        "max_epochs": 2,
        "batch_size": 64,
        "learning_rate": 1e-2,
        "seed": SEED,
        "dataset_options": dict(DATASET_OPTIONS),
        "search": copy.deepcopy(example["search"]),
    }


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(to_toml(doc))
    assert tomllib.loads(path.read_text()) == doc  # the writer round-trips
    return path


def search(ckpt: Path, workdir: Path, doc: dict, *args: str, out: str = "out") -> Path:
    cfg = write_config(workdir / f"{out}.toml", doc)
    out_dir = workdir / out
    rc = main(["search", str(cfg), "--out", str(out_dir), "--load", str(ckpt), *args])
    assert rc == 0
    return out_dir


def read_trials(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # rows come in the order trials finished; every trial of the store has one
    assert sorted(int(r["number"]) for r in rows) == list(range(len(rows)))
    return rows


def config_of(row: dict[str, str]) -> tuple[int, ...]:
    return tuple(int(row[d]) for d in DIMS)


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


class Tiny(nn.Module):
    """jsc-tiny written out here: BatchNorm1d(16), ReLU, Linear(16, 5), ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.seq_blocks = nn.Sequential(nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5), nn.ReLU())

    def forward(self, x):
        return self.seq_blocks(x)


def plan_for(d: int, w: int, b: int) -> dict:
    """A by-name `[passes.quantize]` table quantizing only seq_blocks_2."""
    return {
        "by": "name",
        "default": {"config": {"name": "NA"}},
        "seq_blocks_2": {
            "config": {
                "name": "integer",
                "data_in_width": d,
                "data_in_frac_width": "NA",
                "weight_width": w,
                "weight_frac_width": "NA",
                "bias_width": b,
                "bias_frac_width": "NA",
            }
        },
    }


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        correct = int((model(x).argmax(dim=1) == y).sum())
    return correct / len(y)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("search")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    cfg = write_config(workdir / "train.toml", base_doc())
    assert main(["train", str(cfg), "--out", str(workdir / "train")]) == 0
    path = workdir / "train" / "model.pt"
    assert path.exists()
    return path


@pytest.fixture(scope="module")
def float_model(ckpt) -> nn.Module:
    model = Tiny()
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def data():
    return load_dataset("fake", seed=SEED, **DATASET_OPTIONS)


@pytest.fixture(scope="module")
def reference(float_model, data) -> dict[tuple[int, int, int], dict[str, float]]:
    """Independent exhaustive evaluation of the 48 candidates on the validation split."""
    out = {}
    for d, w, b in ALL_CONFIGS:
        candidate = quantize_model(float_model, plan_for(d, w, b))
        acc = accuracy(candidate, data.x_val, data.y_val)
        avg = float(w)  # only seq_blocks_2 is quantized: the mean weight width is its width
        out[(d, w, b)] = {"accuracy": acc, "average_bitwidth": avg, "score": 2 * acc - 0.1 * avg}
    return out
