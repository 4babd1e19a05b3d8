"""What the fast-path tests (tests/test_fastpath*.py) share: the models and search spaces they
run (jsc-tiny, jsc-s, digits MLP and CNN, LayerNorm and GELU, every number format), the plain
path they are checked against (`quantize_model`, the whole split, the unbatched metrics), and
a fixture that keeps torch on one thread.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from bitscout.evaluate.evaluator import Evaluator, predict
from bitscout.evaluate.metrics import MetricContext, compute_metrics
from bitscout.quant import quantize_model
from bitscout.quant.space import SearchSpace
from bitscout.zoo.data import load_dataset
from bitscout.zoo.models import build_model

METRIC_NAMES = ["accuracy", "loss", "average_bitwidth", "model_size", "bops", "flops"]
CONFIGS = 30  # random configs per model
LOSS_RTOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small operations: a second OpenMP thread only adds stalls on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layer(data_in, weight, bias, **extra) -> dict:
    table = {"name": ["integer"], "data_in_width": data_in, "weight_width": weight}
    return {**table, "bias_width": bias, **extra}


def _jsc_data():
    data = load_dataset("fake", seed=3, num_samples=6000)
    return data.x_val, data.y_val


def _digits_data():
    data = load_dataset("digits", seed=3)
    return data.x_val, data.y_val


def _randomize_norms(model: nn.Module, seed: int) -> nn.Module:
    """Random init leaves BatchNorm the identity; give its running stats something to do."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def jsc_tiny():
    torch.manual_seed(0)
    model = _randomize_norms(build_model("jsc-tiny"), 0)
    tables = {
        "default": {"name": ["NA"]},
        "seq_blocks_2": _layer([4, 8, 16], [2, 4, 8, 16], [2, 4, 8, 16]),
    }
    return model, SearchSpace(model, "name", tables), *_jsc_data()


def jsc_s():
    torch.manual_seed(1)
    model = _randomize_norms(build_model("jsc-s"), 1)
    tables = {
        "default": {"name": ["NA"]},
        "seq_blocks_2": _layer([4, 8], [2, 8], [8], name=["integer", "NA"]),
        "seq_blocks_5": _layer([6, 16], [3, 8], [4, 16], rounding=["half_even", "floor"]),
        "seq_blocks_7": _layer(
            [8], [4, 16], [8], overflow=["saturate", "wrap"], accum_width=[10, 24]
        ),  # a narrow and a wide accumulator
        "seq_blocks_9": _layer([4, 8, 12], [2, 4, 8], [4, 8], weight_frac_width=["NA", 3]),
    }
    return model, SearchSpace(model, "name", tables), *_jsc_data()


def digits_mlp():
    torch.manual_seed(2)
    model = build_model("mlp").eval()
    tables = {
        "default": {
            "name": ["integer"],
            "data_in_width": [8],
            "weight_width": [8],
            "bias_width": [8],
        },
        "seq_blocks_0": _layer([6, 8], [3, 6], [8], data_in_frac_width=[2, "NA"]),
        "seq_blocks_2": _layer([8, 16], [2, 4, 8], [8, 16]),
        "seq_blocks_4": _layer([4, 8, 16], [2, 4, 8, 16], [4, 8, 16]),
    }
    return model, SearchSpace(model, "name", tables), *_digits_data()


def digits_cnn():
    torch.manual_seed(3)
    model = build_model("cnn", channels=4).eval()
    tables = {
        "default": {"name": ["NA"]},
        "seq_blocks_1": _layer([8], [3, 8], [8, 16]),
        "seq_blocks_4": _layer([6, 8], [2, 4, 8], [8], result_width=[6, 12]),
        "seq_blocks_8": _layer([4, 8], [4, 8], [4, 8]),
    }
    return model, SearchSpace(model, "name", tables), *_digits_data()


class _SeqModel(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.seq = nn.Sequential(*layers)

    def forward(self, x):
        return self.seq(x)


def digits_layernorm_gelu():
    """A chain with modules bitscout's zoo does not use: LayerNorm and GELU."""
    torch.manual_seed(4)
    model = _SeqModel(
        nn.Linear(64, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 32), nn.LayerNorm(32),
        nn.GELU(), nn.Linear(32, 10),
    ).eval()  # fmt: skip
    tables = {
        "default": {"name": ["NA"]},
        "seq_0": _layer([6, 8], [3, 4, 8], [8]),
        "seq_3": _layer([4, 8], [2, 4, 8], [8, 16]),
        "seq_6": _layer([4, 8], [3, 8], [8]),
    }
    return model, SearchSpace(model, "name", tables), *_digits_data()


def digits_formats():
    """Every number format, several per layer, the format itself searched."""
    torch.manual_seed(5)
    model = build_model("mlp").eval()
    tables = {
        "default": {"name": ["NA"]},
        "seq_blocks_0": {
            "name": ["integer", "minifloat_ieee", "log", "block_fp"],
            "data_in_width": [6, 8], "weight_width": [5, 6], "weight_exponent_width": [2, 3],
            "weight_block_size": [8], "data_in_exponent_width": [3],
        },
        "seq_blocks_2": {
            "name": ["mxint", "mxfp", "minifloat_denorm"], "data_in_width": [8],
            "weight_width": [8], "weight_exponent_width": [4, 5], "data_in_exponent_width": [4],
        },
        "seq_blocks_4": {
            "name": ["binary", "ternary", "integer"], "weight_bipolar": [True, False],
            "weight_scaling_factor": [False, True], "weight_width": [4, 8], "data_in_width": [8],
        },
    }  # fmt: skip
    return model, SearchSpace(model, "name", tables), *_digits_data()


CASES = {
    "jsc-tiny": jsc_tiny, "jsc-s": jsc_s, "digits-mlp": digits_mlp, "digits-cnn": digits_cnn,
    "layernorm-gelu": digits_layernorm_gelu, "digits-formats": digits_formats,
}  # fmt: skip


def plain_logits(model, space, config, x):
    return predict(quantize_model(model, space.plan(config)), x)


def plain_metrics(model, space, config, x, y) -> dict[str, float]:
    """The reference: the candidate built from scratch, scored by the unbatched metrics."""
    ctx = MetricContext(
        profile=Evaluator(model, space, (x[:1], y[:1]), []).profile,
        plan=space.resolved(config),
        logits=plain_logits(model, space, config, x),
        targets=y,
    )
    return compute_metrics(METRIC_NAMES, ctx)


def assert_same(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        if name == "loss":
            assert got[name] == pytest.approx(value, rel=LOSS_RTOL, abs=0), name
        else:
            assert got[name] == value, name


def random_indexes(space: SearchSpace, seed: int) -> list[int]:
    return random.Random(seed).sample(range(space.size), min(CONFIGS, space.size))
