"""What the search-space tests (tests/test_space*.py) share: the example's seed table, the
config key its errors name, and the jsc-tiny and jsc-toy models built with a fixed seed."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import torch

from bitscout.zoo.models import build_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jsc_tiny_lab3.toml"
KEY = "search.search_space.seed.seq_blocks_2.config"
TOY_LAYERS = ("seq_blocks_2", "seq_blocks_5", "seq_blocks_8")


def seed_table() -> dict:
    """A fresh copy of the example's `[search.search_space]` table."""
    return copy.deepcopy(tomllib.loads(EXAMPLE.read_text())["search"]["search_space"])


def tiny():
    torch.manual_seed(0)
    return build_model("jsc-tiny")


def toy():
    torch.manual_seed(0)
    return build_model("jsc-toy")
