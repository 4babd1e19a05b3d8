"""What the `run_compare` tests (tests/test_compare*.py) share: the 48-candidate seed space of
examples/jsc_tiny_lab3.toml, offline on the `fake` dataset, readers of compare.csv, and the
module-scoped fixtures: a config, one float checkpoint and one full comparison."""

from __future__ import annotations

import csv
import io
import tomllib
from pathlib import Path

import pytest
import tomli_w
from rich.console import Console

from bitscout.analysis.compare import CompareResult
from bitscout.cli.build import load_data, train_to
from bitscout.cli.compare import run_compare
from bitscout.cli.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jsc_tiny_lab3.toml"
STRATEGIES = ["bruteforce", "tpe", "random"]
REPEATS = 3
SIZE = 48
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def base_doc() -> dict:
    doc = tomllib.loads(EXAMPLE.read_text())
    doc.pop("dataset_path", None)
    doc.update(
        dataset="fake",
        max_epochs=2,
        dataset_options={"num_samples": 2000, "num_features": 16, "num_classes": 5},
    )
    return doc


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(tomli_w.dumps(doc))
    return path


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def of(rows: list[dict], strategy: str, seed: int | None = None) -> list[dict]:
    return [r for r in rows if r["strategy"] == strategy and seed in (None, r["seed"])]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare")


@pytest.fixture(scope="module")
def config_path(workdir) -> Path:
    return write_config(workdir / "lab3.toml", base_doc())


@pytest.fixture(scope="module")
def ckpt(workdir, config_path) -> Path:
    cfg = load_config(config_path)
    train_to(cfg, load_data(cfg), workdir / "train", quiet())
    return workdir / "train" / "model.pt"


@pytest.fixture(scope="module")
def result(workdir, config_path, ckpt) -> CompareResult:
    cfg = load_config(config_path)
    return run_compare(
        cfg, STRATEGIES, REPEATS, workdir / "out", quiet(), trials=SIZE, load=str(ckpt)
    )
