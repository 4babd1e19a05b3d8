"""Issue 20 item 9: `bops` charges each shared scale to the values that share it. A binary or
ternary input's float32 scale is per sample (`binary._slices`: everything after the batch
dimension), so it is amortized over the whole sample (C*H*W for a convolution), not over
its shape after the first dimension (1 value for a Linear's input, H*W for a Conv2d's)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bitscout.evaluate.metrics import MetricContext, compute_metrics
from bitscout.evaluate.profile import profile_model
from bitscout.quant.binary import Binary, Ternary
from bitscout.quant.blocks import MXInt
from bitscout.quant.formats import Integer
from bitscout.quant.layers import LayerQuant


def _bops(model: nn.Module, sample: torch.Tensor, quant: LayerQuant) -> float:
    profile = profile_model(model, sample)
    plan = {layer.path: quant for layer in profile.layers}
    return compute_metrics(["bops"], MetricContext(profile=profile, plan=plan))["bops"]


def test_binary_mlp_by_hand():
    """64 -> 32 -> 10: the weights' scales are per output row (64 and 32 values share one),
    the inputs' per sample (64 and 32 values)."""
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    want = 64 * 32 * (1 + 32 / 64) * (1 + 32 / 64) + 32 * 10 * (1 + 32 / 32) * (1 + 32 / 32)
    got = _bops(model, torch.zeros(1, 64), LayerQuant(data_in=Binary(), weight=Binary()))
    assert got == pytest.approx(want, rel=1e-12)  # was 122,496: 33 bits per input value
    assert want == 5888


def test_binary_cnn_by_hand():
    """Conv2d(3, 4, 3) on 3x8x8, then Linear(144, 10): the conv input's scale spans 3*8*8."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    conv_macs = 4 * 6 * 6 * 3 * 3 * 3
    conv = conv_macs * (2 + 32 / 27) * (2 + 32 / (3 * 8 * 8))  # ternary, scaled
    dense = 144 * 10 * (2 + 32 / 144) * (2 + 32 / 144)
    quant = LayerQuant(data_in=Ternary(scaling_factor=True), weight=Ternary(scaling_factor=True))
    got = _bops(model, torch.zeros(1, 3, 8, 8), quant)
    assert got == pytest.approx(conv + dense, rel=1e-12)


def test_formats_without_per_sample_scales_are_unchanged():
    """Fixed point has no scale; MXINT's is per block of the last dimension, as before."""
    model = nn.Sequential(nn.Linear(64, 10))
    sample = torch.zeros(1, 64)
    assert _bops(model, sample, LayerQuant(data_in=Integer(8), weight=Integer(4))) == 640 * 32
    mx = LayerQuant(data_in=MXInt(), weight=MXInt())
    assert _bops(model, sample, mx) == pytest.approx(640 * (8 + 8 * 2 / 64) ** 2, rel=1e-12)
    bipolar = LayerQuant(data_in=Binary(bipolar=True), weight=Binary(bipolar=True))
    assert _bops(model, sample, bipolar) == 640
