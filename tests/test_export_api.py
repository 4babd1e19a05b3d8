"""`bitscout.export(result_or_run_dir, to=[...])`: the Python door to `bitscout export`, and the
package it shares its name with."""

import numpy as np
import pytest
import torch
from torch import nn

import bitscout
from bitscout.errors import ConfigError
from bitscout.export import ExportResult, grid_state_dict
from bitscout.study.result import SearchResult

SPACE = {"seed": {"default": {"config": {"name": ["integer"], "weight_width": [3, 6],
                                         "weight_frac_width": [2], "data_in_width": [8],
                                         "bias_width": [8]}}}}  # fmt: skip


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 5, generator=g)
    return x, (x[:, 0] > 0).long()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def result(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> SearchResult:
    out = tmp_path_factory.mktemp("search") / "run"
    return bitscout.search(model, _data(), SPACE, strategy="bruteforce", out=out, quiet=True)


def _on_grid(values: np.ndarray, frac: int, width: int) -> bool:
    """Every value is k * 2**-frac with k a signed `width`-bit integer (independent check)."""
    k = values * 2.0**frac
    return bool(np.all(k == np.round(k)) and np.all(np.abs(k) <= 2 ** (width - 1)))


def test_export_of_a_result_writes_the_best_config(result: SearchResult, tmp_path) -> None:
    found = bitscout.export(result, to=["checkpoint", "npz"], out=tmp_path / "x")
    assert isinstance(found, ExportResult) and found.verify is None
    assert [p.name for p in found.files] == ["precision.json", "quantized.pt", "codes.npz"]
    assert all(p.is_file() for p in found.files) and found.label == "the best config"
    state = torch.load(tmp_path / "x" / "quantized.pt", weights_only=True)
    expected = grid_state_dict(result.float_model(), result.plan())
    assert state.keys() == expected.keys()
    for key in state:
        torch.testing.assert_close(state[key], expected[key])
    width = next(v for k, v in result.best.config.items() if k.endswith("weight_width"))
    assert _on_grid(state["0.weight"].numpy(), 2, width)


def test_export_of_a_trial_of_a_run_directory(result: SearchResult, model, tmp_path) -> None:
    number = int(result.trials["number"].iloc[0])
    found = bitscout.export(result.out, to="checkpoint", trial=number, model=model)
    assert found.out == result.out / f"export_trial_{number}"
    state = torch.load(found.out / "quantized.pt", weights_only=True)
    expected = grid_state_dict(model, result.plan(number))
    for key in state:
        torch.testing.assert_close(state[key], expected[key])
    again = bitscout.export(result.out, to="checkpoint", model=model, out=tmp_path / "best")
    assert again.label == "best.toml"  # the run's best, as `bitscout export RUN_DIR`
    best = torch.load(again.out / "quantized.pt", weights_only=True)
    for key, value in grid_state_dict(model, result.plan()).items():
        torch.testing.assert_close(best[key], value)


def test_export_refuses_what_it_cannot_do(result: SearchResult, tmp_path) -> None:
    with pytest.raises(ConfigError, match="to: must be one or more of hls4ml"):
        bitscout.export(result, to=["onnx"], out=tmp_path)
    with pytest.raises(ConfigError, match="model: is needed to export a run directory"):
        bitscout.export(result.out, to="npz")
    with pytest.raises(ConfigError, match="rows: must be an integer >= 1"):
        bitscout.export(result, to="npz", out=tmp_path, rows=0)
    in_memory = bitscout.search(result.float_model(), _data(), SPACE, strategy="bruteforce")
    with pytest.raises(ConfigError, match="out: is required: the search wrote no run directory"):
        bitscout.export(in_memory, to="npz")
    loaded = SearchResult.load(result.out, model=result.float_model())
    with pytest.raises(ConfigError, match="hls4ml needs validation rows: pass data="):
        bitscout.export(loaded, to="hls4ml", out=tmp_path / "h")


def test_the_callable_is_the_package() -> None:
    import bitscout.export.hls4ml as hls4ml_module

    assert callable(bitscout.export)
    assert bitscout.export.to_hls4ml is hls4ml_module.to_hls4ml  # documented names stay
    assert bitscout.export.__name__ == "bitscout.export"
