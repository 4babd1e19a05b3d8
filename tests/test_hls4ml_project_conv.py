"""`--verify` for convolutions: hls4ml keeps Conv1d/Conv2d buffers channels-last; the check
turns them back and finds every layer and the logits bit-exact, against a reference written
here (each tensor put on its grid, the convolution in float64). precision.json's typedef
names hold for a CNN's project too (the input reaches the first convolution through the
channels-last transpose hls4ml adds)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hls4ml_support import layer, need_hls4ml
from torch import nn

from bitscout.export.artifacts import precision
from bitscout.export.hls4ml import channels_first, verify


class Net(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.seq_blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq_blocks(x)


def cnn2d() -> nn.Module:
    torch.manual_seed(0)
    return Net(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 2, padding=1), nn.ReLU(),
               nn.Flatten(), nn.Linear(4 * 5 * 5, 5)).eval()  # fmt: skip


def cnn2d_bn() -> nn.Module:
    """BatchNorm2d between quantized layers: scored and exported in the stand-in fixed point."""
    torch.manual_seed(5)
    model = Net(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 2, padding=1),
                nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 5))  # fmt: skip
    with torch.no_grad():
        for norm in (model.seq_blocks[1], model.seq_blocks[4]):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.3, 3.0)
            norm.weight.normal_()
            norm.bias.normal_()
    return model.eval()


def cnn1d() -> nn.Module:
    torch.manual_seed(1)
    return Net(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Conv1d(3, 4, 2, bias=False), nn.Flatten(),
               nn.Linear(4 * 5, 5)).eval()  # fmt: skip


PLAN = {
    "by": "type",
    "conv2d": {"config": layer((8, 4), (6, 4), (8, 4))},
    "conv1d": {"config": layer((7, 3), (5, 4), (8, 4), "floor", "wrap")},
    "linear": {"config": layer((6, 2), (4, 3), (8, 4), "half_up")},
}
STAND_IN = {"t_width": 32, "t_frac_width": 16, "rounding": "half_even", "overflow": "saturate"}
ROUND = {"half_even": torch.round, "floor": torch.floor, "half_up": lambda k: torch.floor(k + 0.5)}


def q(v: torch.Tensor, c: dict, tensor: str) -> torch.Tensor:
    width, frac = c[f"{tensor}_width"], c[f"{tensor}_frac_width"]
    k = ROUND[c["rounding"]](v.double() * 2.0**frac)
    lo = -(2 ** (width - 1))
    k = k.clamp(lo, -lo - 1) if c["overflow"] == "saturate" else (k - lo) % 2**width + lo
    return k * 2.0**-frac


def reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Every quantized layer's input, weight and bias on its grid, the layer in float64."""
    h = x.double()
    for module in model.seq_blocks:
        if isinstance(module, nn.Conv2d | nn.Conv1d | nn.Linear):
            c = PLAN[type(module).__name__.lower()]["config"]
            w = q(module.weight, c, "weight")
            b = None if module.bias is None else q(module.bias, c, "bias")
            h = q(h, c, "data_in")
            if isinstance(module, nn.Linear):
                h = F.linear(h, w, b)
            else:
                conv = F.conv2d if isinstance(module, nn.Conv2d) else F.conv1d
                h = conv(h, w, b, padding=module.padding)
        elif isinstance(module, nn.BatchNorm2d):  # hls4ml's x * scale + bias, all ap_fixed<32,16>
            scale = module.weight.double() / torch.sqrt(module.running_var.double() + module.eps)
            shift = module.bias.double() - module.running_mean.double() * scale
            s, b = (q(v, STAND_IN, "t")[:, None, None] for v in (scale, shift))
            h = q(q(h, STAND_IN, "t") * s + b, STAND_IN, "t").float().double()
        else:
            h = module(h)
    return h.detach().numpy()


@pytest.mark.parametrize(
    ("build", "shape"), [(cnn2d, (2, 6, 6)), (cnn2d_bn, (2, 6, 6)), (cnn1d, (2, 8))]
)
def test_convolutions_are_verified_bit_exact(build, shape, tmp_path):
    need_hls4ml()
    model = build()
    x = torch.from_numpy(np.random.default_rng(2).normal(0, 2, (30, *shape))).float()
    found = verify(model, PLAN, x, tmp_path / "prj", shape)
    assert [e["max_abs_difference"] for e in found["layers"]] == [0.0, 0.0, 0.0], found
    assert found["max_logit_difference"] == 0.0 and found["top_class_agreement"] == 1.0
    with torch.inference_mode():  # bitscout's scored logits are the reference's
        from bitscout.quant.apply import quantize_model

        assert np.array_equal(quantize_model(model, PLAN)(x).double().numpy(), reference(model, x))
    typedefs = {name: ap.replace(",0>", ">") for ap, name in re.findall(
        r"typedef (ap_fixed<[^>]*>) (\w+);",
        (tmp_path / "prj" / "firmware" / "defines.h").read_text())}  # fmt: skip
    for entry in json.loads(json.dumps(precision(model, PLAN)))["layers"]:
        for tensor, name in entry["hls4ml"].items():
            want = entry[tensor]["ap_fixed"].replace(",AP_TRN,AP_WRAP>", ">")  # the defaults,
            assert typedefs[name] == want, (entry["name"], tensor, name)  # unwritten by hls4ml


def test_channels_last_buffers_turn_back_into_pytorchs_layout():
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    buffer = nchw.transpose(0, 2, 3, 1).reshape(2, -1)  # hls4ml's: channel fastest
    assert np.array_equal(channels_first(buffer, (3, 4, 5)), nchw)
    ncl = nchw[:, :, 0, :]
    assert np.array_equal(channels_first(ncl.transpose(0, 2, 1).reshape(2, -1), (3, 5)), ncl)
    assert np.array_equal(channels_first(nchw.reshape(2, -1), (60,)), nchw.reshape(2, -1))


def test_a_cnns_project_reproduces_bitscout_in_c_simulation(tmp_path):
    """The input shape channels first, as PyTorch gives it; tb_data rows flat in that order."""
    need_hls4ml()
    import yaml

    from bitscout.export.run import Subject, write_targets

    x = torch.from_numpy(np.random.default_rng(4).normal(0, 2, (20, 2, 6, 6))).float()
    write_targets(Subject(cnn2d(), PLAN, x, "cnn"), ["hls4ml"], tmp_path / "e", rows=12)
    config = yaml.safe_load((tmp_path / "e" / "hls4ml_config.yml").read_text())
    assert config["InputShape"] == [[2, 6, 6]]
    tb = np.loadtxt(tmp_path / "e" / config["InputData"], ndmin=2)
    assert np.array_equal(tb, x[:12].reshape(12, -1).double().numpy())
    found = subprocess.run([sys.executable, str(tmp_path / "e" / "convert_hls4ml.py")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    assert "12 test-bench rows: largest difference from bitscout's predictions 0," in found.stdout


def test_a_module_hls4ml_cannot_convert_is_one_line(tmp_path):
    """The zoo's cnn unflattens its features first: hls4ml 1.3.0 has no Unflatten."""
    need_hls4ml()
    from bitscout.errors import ConfigError
    from bitscout.zoo.models import build_model

    model = build_model("cnn").eval()
    with pytest.raises(ConfigError) as err:
        verify(model, PLAN, torch.zeros(4, 64), tmp_path / "prj", (64,))
    assert err.value.key == "--verify" and "Unflatten" in str(err.value)
    assert "\n" not in str(err.value)
