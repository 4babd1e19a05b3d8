"""What the hls4ml tests share: the models and plans they compile, and the check that hls4ml
and a C++ compiler are there (skipped without them, failed under BITSCOUT_REQUIRE_HLS4ML=1,
which .ci/run sets)."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest
import torch
from torch import nn

from bitscout.zoo.models import build_model

REQUIRE_ENV = "BITSCOUT_REQUIRE_HLS4ML"
ROUNDINGS = ("half_even", "half_up", "floor")
OVERFLOWS = ("saturate", "wrap")


def need_hls4ml() -> None:
    missing = [n for n, ok in (("hls4ml", importlib.util.find_spec("hls4ml")),
                               ("g++", shutil.which("g++"))) if not ok]  # fmt: skip
    if not missing:
        return
    why = f"needs {' and '.join(missing)} (pip install 'bitscout[hls4ml]'; apt-get install g++)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but this {why}", pytrace=False)
    pytest.skip(why)


def jsc_tiny() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("jsc-tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.6)
        norm = model.seq_blocks[0]
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    return model.eval()


def jsc_toy() -> nn.Module:
    """jsc-toy: a BatchNorm in front of and after every Linear layer, each with statistics."""
    torch.manual_seed(2)
    model = build_model("jsc-toy")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.3, 3.0)
                m.weight.normal_(1.0, 0.5)
                m.bias.normal_()
    return model.eval()


def digits_mlp() -> nn.Module:
    torch.manual_seed(1)
    return build_model("mlp").eval()


def layer(din, w, b, rounding="half_even", overflow="saturate", **extra) -> dict:
    """A layer config: each format (width, frac) or (width, "NA")."""
    cfg = {"name": "integer", "rounding": rounding, "overflow": overflow, **extra}
    for tensor, (width, frac) in zip(("data_in", "weight", "bias"), (din, w, b), strict=True):
        cfg.update({f"{tensor}_width": width, f"{tensor}_frac_width": frac})
    return cfg


def jsc_plans() -> dict[str, dict]:
    """The seed grid's corners, frac > width and negative frac, and fixed accumulators."""
    plans = {
        f"corner in={i} w={w} b={b}": layer((i, "NA"), (w, "NA"), (b, "NA"))
        for i, w, b in ((4, 2, 2), (16, 16, 16), (4, 16, 2), (16, 2, 16))
    }
    plans["frac > width"] = layer((6, 8), (4, 6), (3, 5), "half_up")
    plans["negative frac"] = layer((6, -1), (5, -2), (4, -3), "floor", "wrap")
    plans["narrow saturating accumulator"] = layer((8, 4), (6, 4), (8, 4), accum_width=10,
                                                   accum_frac_width=6)  # fmt: skip
    plans["narrow wrapping accumulator and result"] = layer(
        (8, 3), (5, 3), (6, 2), "half_up", "wrap", accum_width=9, result_width=6,
        result_frac_width=2,
    )  # fmt: skip
    return {k: {"by": "name", "seq_blocks_2": {"config": v}} for k, v in plans.items()}


def digits_plans() -> dict[str, dict]:
    """Every rounding x overflow pair, each on all three layers with different widths."""
    plans = {}
    for rounding in ROUNDINGS:
        for overflow in OVERFLOWS:
            plans[f"{rounding} {overflow}"] = {
                "by": "name",
                "seq_blocks_0": {"config": layer((6, 2), (4, 3), (6, 3), rounding, overflow)},
                "seq_blocks_2": {"config": layer((5, 1), (3, 2), (8, 5), rounding, overflow)},
                "seq_blocks_4": {"config": layer((4, 0), (6, 5), (5, 2), rounding, overflow)},
            }
    return plans
