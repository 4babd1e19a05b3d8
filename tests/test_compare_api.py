"""`bitscout.compare(model, data, space, ...)`: the Python door to `bitscout compare`."""

import hashlib
import itertools
import json
from importlib import metadata

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


def _test_split() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(200, 6, generator=g)
    return x, (x[:, 0] - x[:, 2] > 0).long()


def _accuracy_by_hand(model: nn.Module, config: dict, xy) -> float:
    quantized = quantize_model(model, QuantPlan("name", read_space(SPACE, model).resolved(config)))
    with torch.no_grad():
        return float((quantized(xy[0]).argmax(1) == xy[1]).float().mean())


def test_each_final_pick_is_scored_on_the_test_split(model: nn.Module, tmp_path) -> None:
    found = bitscout.compare(model, _data(), SPACE, objective={"accuracy": 1.0},
                             strategies=["random", "tpe"], repeats=2, trials=5,
                             test_data=_test_split(), out=tmp_path / "c")  # fmt: skip
    assert len(found.picks) == 4
    for pick in found.picks:
        assert pick["validation"] == pytest.approx(
            _accuracy_by_hand(model, pick["config"], _data())
        )
        assert pick["test"] == pytest.approx(
            _accuracy_by_hand(model, pick["config"], _test_split())
        )
    for entry in found.summary:
        tests = sorted(p["test"] for p in found.picks if p["strategy"] == entry["strategy"])
        assert entry["final_test"] == pytest.approx(sum(tests) / 2)  # the median of two
    assert "its test score (median)" in (tmp_path / "c" / "compare.md").read_text()
    without = bitscout.compare(model, _data(), SPACE, strategies=["random"], repeats=1, trials=3)
    assert without.summary[0]["final_test"] is None and without.picks[0]["test"] is None


def test_python_provenance(model: nn.Module, tmp_path) -> None:
    found = bitscout.compare(model, _data(), SPACE, strategies=["random"], repeats=1, trials=4,
                             within=2.5, budgets=[2, 3], out=tmp_path / "c")  # fmt: skip
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    saved = json.loads((tmp_path / "c" / "compare.json").read_text())["provenance"]
    assert saved["model"]["weights_sha256"] == digest.hexdigest()
    assert saved["model"]["class"] == "Sequential"
    assert saved["bitscout_version"] == metadata.version("bitscout")
    assert saved["command"].startswith("bitscout.compare(")
    options = saved["options"]
    assert options["within"] == 2.5 and options["budgets"] == [2, 3]
    assert options["strategies"] == ["random"] and options["trials"] == 4
    assert options["space"] == SPACE and options["objective"] == {"accuracy": 1.0}
    assert found.summary[0]["within"] == 2.5 and list(found.summary[0]["best_at"]) == [2, 3]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"within": 0}, r"within: must be a percentage in \(0, 100\], got 0"),
    ({"within": "1%"}, r"within: must be a percentage"),
    ({"budgets": [10, 5]}, r"budgets: must be one or more distinct trial counts, increasing"),
    ({"budgets": [0]}, r"budgets: must be integers >= 1"),
])  # fmt: skip
def test_compare_refuses_a_bad_threshold_or_budgets(model: nn.Module, tmp_path, kwargs,
                                                    message) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        bitscout.compare(model, _data(), SPACE, out=tmp_path / "c", **kwargs)
    assert not any(tmp_path.iterdir())
