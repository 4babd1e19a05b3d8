"""`bitscout.compare(model, data, space, ...)`: the Python door to `bitscout compare`."""

import itertools

import pytest
import torch
from torch import nn

import bitscout
from bitscout.analysis.compare import COLUMNS
from bitscout.errors import ConfigError
from bitscout.quant.apply import QuantPlan, quantize_model
from bitscout.study.inputs import read_space

WIDTHS = [2, 3, 4, 8]
SPACE = {"seed": {"default": {"config": {"name": ["integer"], "weight_width": WIDTHS,
                                         "data_in_width": [8], "bias_width": [8]}}}}  # fmt: skip


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 6, generator=g)
    return x, (x[:, 0] - x[:, 2] > 0).long()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = _data()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _best_accuracy_by_hand(model: nn.Module) -> float:
    """The best accuracy over every candidate, each counted here on the quantized model."""
    space = read_space(SPACE, model)
    dims = [d.name for d in space.dimensions]
    x, y = _data()
    best = 0.0
    for widths in itertools.product(WIDTHS, repeat=len(dims)):
        config = dict(zip(dims, widths, strict=True))
        quantized = quantize_model(model, QuantPlan("name", space.resolved(config)))
        with torch.no_grad():
            best = max(best, float((quantized(x).argmax(1) == y).float().mean()))
    return best


def test_compare_from_python(model: nn.Module, tmp_path, capsys) -> None:
    weights = {"accuracy": 1.0, "average_bitwidth": -0.05}
    found = bitscout.compare(model, _data(), SPACE, objective=weights, repeats=2,
                             strategies=["bruteforce", "random"], out=tmp_path / "c")  # fmt: skip
    assert capsys.readouterr().out == ""  # the library prints nothing unless shown
    frame = found.frame
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 2 * 2 * len(WIDTHS) ** 2  # the whole space, per strategy and seed
    assert set(frame["strategy"]) == {"bruteforce", "random"}
    assert [p.name for p in found.files] == ["compare.csv", "compare.md", "compare.json",
                                             "compare.png"]  # fmt: skip
    assert all(p.is_file() for p in found.files)
    assert found.evaluated == len(WIDTHS) ** 2  # one cache for every run


def test_compare_optimum_is_the_best_candidate(model: nn.Module) -> None:
    found = bitscout.compare(model, _data(), SPACE, strategies=["bruteforce"], repeats=1,
                             objective={"accuracy": 1.0})  # fmt: skip
    assert found.optimum == pytest.approx(_best_accuracy_by_hand(model))
    assert found.frame["regret"].iloc[-1] == 0.0  # the brute force has seen every candidate
    assert found.files == []  # out=None writes nothing


def test_compare_refuses_bad_arguments_before_work(model: nn.Module, tmp_path) -> None:
    with pytest.raises(ConfigError, match="strategies: unknown strategy"):
        bitscout.compare(model, _data(), SPACE, strategies=["annealing"])
    with pytest.raises(ConfigError, match="repeats: must be an integer >= 1"):
        bitscout.compare(model, _data(), SPACE, repeats=0)
    with pytest.raises(ConfigError, match="objective: compare needs a single objective"):
        bitscout.compare(model, _data(), SPACE, objective=["accuracy", "average_bitwidth"])
    with pytest.raises(ConfigError, match=r"model: must be a torch\.nn\.Module"):
        bitscout.compare("model", _data(), SPACE)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
