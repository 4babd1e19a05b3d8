"""`bitscout.search(...)`: any float model, data as given, user metrics and losses, results."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bitscout
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import evaluate_model
from bitscout.quant.apply import quantize_model


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class Residual(nn.Module):
    """Linear layers nested in residual blocks, a LayerNorm and a GELU: not a chain."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(64, 16)
        self.blocks = nn.ModuleDict({"a": Block(16), "b": Block(16)})
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks.values():
            h = block(h)
        return self.head(h)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:600] / 16.0).astype(np.float32), y[:600]


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    torch.manual_seed(0)
    x, y = _digits()
    model = Residual()
    return bitscout.train(model, (x, y), bitscout.TrainOptions(epochs=15, learning_rate=3e-3))


def _layer(data_in: list[int], weight: list[int]) -> dict:
    return {"config": {"name": ["integer"], "data_in_width": data_in, "weight_width": weight,
                       "bias_width": [8]}}  # fmt: skip


SPACE = {
    "setup": {"by": "name"},
    "seed": {
        "default": {"config": {"name": ["NA"]}},
        "blocks.a.fc1": _layer([4, 8], [2, 8]),  # a module path
        "blocks_b_fc2": _layer([8], [2, 4, 8]),  # the torch.fx name of another
    },
}


def test_the_model_is_never_modified(trained):
    before = copy.deepcopy(trained.state_dict())
    trained.train()  # even its training flag stays as the caller left it
    bitscout.search(trained, _digits(), SPACE, strategy="bruteforce", quiet=True)
    assert trained.training
    trained.eval()
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("strategy", ["bruteforce", "tpe"])
def test_a_residual_model_with_layernorm_is_searched(trained, strategy):
    x, y = _digits()
    result = bitscout.search(trained, (x, y), SPACE, strategy=strategy, trials=12, seed=0,
                             quiet=True)  # fmt: skip
    assert len(result.trials) == 12 and result.best is not None
    # dimensions are named by torch.fx name, however the table named the layer
    assert set(result.best.config) == {
        "blocks_a_fc1/data_in_width", "blocks_a_fc1/weight_width", "blocks_b_fc2/weight_width",
    }  # fmt: skip
    # every trial scores what the candidate built from scratch scores
    for row in result.trials.to_dict("records"):
        config = {k: row[k] for k in result.best.config}
        candidate = result.quantized_model(config)
        want = evaluate_model(candidate, torch.from_numpy(x), torch.from_numpy(y))
        assert row["accuracy"] == want["accuracy"]
        assert row["loss"] == pytest.approx(want["loss"], rel=1e-6)
    # the quantized layers really are the ones named, nested as they are
    qmodel = result.quantized_model()
    assert type(qmodel.blocks["a"].fc1).__name__ == "QuantLinear"
    assert type(qmodel.blocks["b"].fc2).__name__ == "QuantLinear"
    assert type(qmodel.blocks["a"].fc2) is nn.Linear and type(qmodel.embed) is nn.Linear


def test_layers_by_type_in_a_nested_model(trained):
    space = {"setup": {"by": "type"}, "seed": {"default": {"config": {"name": ["NA"]}},
             "linear": _layer([8], [4, 8])}}  # fmt: skip
    result = bitscout.search(trained, _digits(), space, strategy="bruteforce", quiet=True)
    assert list(result.best.config) == ["linear/weight_width"]
    assert result.trials["average_bitwidth"].tolist() == [4.0, 8.0]


def test_data_as_arrays_tensors_datasets_and_loaders_score_alike(trained):
    x, y = _digits()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    forms = {
        "numpy": (x, y),
        "tensors": (tx, ty),
        "dataset": TensorDataset(tx, ty),
        "loader": DataLoader(TensorDataset(tx, ty), batch_size=100),
    }
    results = {
        name: bitscout.search(trained, data, SPACE, strategy="bruteforce", quiet=True).trials
        for name, data in forms.items()
    }
    # the same loader, larger than the memory budget: streamed batch by batch
    results["streamed"] = bitscout.search(
        trained, forms["loader"], SPACE, strategy="bruteforce", max_data_bytes=10_000, quiet=True
    ).trials
    reference = results.pop("numpy")
    for name, trials in results.items():
        assert trials["accuracy"].tolist() == reference["accuracy"].tolist(), name
        assert np.allclose(trials["loss"], reference["loss"], rtol=1e-9), name


def test_a_shuffling_loader_is_refused(trained):
    x, y = _digits()
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), shuffle=True)
    with pytest.raises(ConfigError, match="shuffle=False"):
        bitscout.search(trained, loader, SPACE, quiet=True)


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))).squeeze(-1)


def _regression() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=gen)
    return x, x[:, 0] * 0.5 - x[:, 1] + 0.1 * torch.randn(400, generator=gen)


def _max_error(model: nn.Module, data) -> float:
    """The largest absolute error on the validation rows."""
    x, y = data
    with torch.no_grad():
        return float((model(x) - y).abs().max())


def test_a_regression_model_on_its_own_loss_and_metric():
    torch.manual_seed(0)
    x, y = _regression()
    model = bitscout.train(Regressor(), (x, y), bitscout.TrainOptions(epochs=20),
                           loss_fn=F.mse_loss)  # fmt: skip
    space = {"setup": {"by": "name"}, "seed": {"default": {"config": {"name": ["integer"],
             "data_in_width": [4, 8], "weight_width": [2, 4, 8], "bias_width": [8]}}}}  # fmt: skip
    kwargs = {"metrics": {"max_error": (_max_error, "minimize")}, "loss_fn": F.mse_loss,
              "strategy": "bruteforce", "quiet": True}  # fmt: skip
    free = bitscout.search(model, (x, y), space, objective={"loss": -1.0}, **kwargs)
    bound = float(free.trials["max_error"].median())  # half the candidates break it
    result = bitscout.search(
        model, (x, y), space, objective={"loss": -1.0, "max_error": -0.1},
        constraints=[f"max_error <= {bound!r}"], **kwargs,
    )  # fmt: skip
    trials = result.trials
    assert set(trials["state"]) == {"complete", "infeasible"}
    assert {"loss", "max_error", "scaled_max_error"} <= set(trials) and "accuracy" not in trials
    for row in trials.to_dict("records"):  # each value is the user's own function's
        config = {k: row[k] for k in result.best.config}
        qmodel = result.quantized_model(config)
        with torch.no_grad():
            assert row["loss"] == pytest.approx(float(F.mse_loss(qmodel(x), y)), rel=1e-6)
        assert row["max_error"] == _max_error(qmodel, (x, y))
        assert (row["state"] == "infeasible") == (row["max_error"] > bound)
    assert result.best.metrics["max_error"] <= bound
    with pytest.raises(ConfigError, match="accuracy: is not available"):
        bitscout.search(model, (x, y), space, objective={"accuracy": 1.0}, loss_fn=F.mse_loss,
                        quiet=True)  # fmt: skip


def test_pareto_search_and_results(trained):
    result = bitscout.search(trained, _digits(), SPACE, objective=["accuracy", "bops"],
                             strategy="bruteforce", quiet=True)  # fmt: skip
    assert result.pareto and result.best == result.pareto[0]
    assert {"objective_accuracy", "objective_bops"} <= set(result.trials)
    directions = {"accuracy": "maximize", "bops": "minimize"}
    explicit = bitscout.search(trained, _digits(), SPACE, objective=directions,
                               strategy="bruteforce", quiet=True)  # fmt: skip
    assert [c.config for c in explicit.pareto] == [c.config for c in result.pareto]


def test_nothing_is_written_without_out(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = bitscout.search(trained, _digits(), SPACE, trials=3, seed=1, quiet=True)
    assert list(tmp_path.iterdir()) == [] and result.out is None
    assert isinstance(result.trials, pd.DataFrame) and len(result.trials) == 3


def test_out_writes_the_outputs_and_resumes(trained, tmp_path):
    out = tmp_path / "run"
    first = bitscout.search(trained, _digits(), SPACE, trials=3, seed=1, out=out, quiet=True)
    assert {"trials.csv", "best.toml", "summary.json", "report.md", "study.journal"} <= {
        p.name for p in out.iterdir()
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_source"] == "given" and summary["dataset"] == "python"
    second = bitscout.search(trained, _digits(), SPACE, trials=6, seed=1, out=out, quiet=True)
    assert len(second.trials) == 6
    assert (
        second.trials.head(3)
        .drop(columns="duration_s")
        .equals(first.trials.drop(columns="duration_s"))
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "tpee"}, "did you mean 'tpe'"),
        ({"objective": {"acuracy": 1.0}}, "did you mean 'accuracy'"),
        ({"objective": {"accuracy": "up"}}, "maximize"),
        ({"trials": 0}, "trials: must be an integer >= 1"),
        ({"seed": -1}, "seed: must be an integer"),
        (
            {"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "nodevice"},
            "device",
        ),
        ({"constraints": ["accuracy >> 1"]}, "constraints"),
        ({"metrics": {"accuracy": lambda m, d: 1.0}}, "built-in or registered"),
        ({"n_jobs": 2}, "n_jobs: needs a store"),
    ],
)
def test_bad_arguments_are_config_errors(trained, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        bitscout.search(trained, _digits(), SPACE, quiet=True, **kwargs)


def test_a_space_from_a_toml_file(trained, tmp_path):
    import tomli_w

    path = tmp_path / "space.toml"
    path.write_text(tomli_w.dumps({"search": {"search_space": SPACE}}))
    result = bitscout.search(trained, _digits(), path, strategy="bruteforce", quiet=True)
    assert len(result.trials) == 12


def test_registered_metric_is_usable_by_name(trained, monkeypatch):
    from bitscout.evaluate.metrics import METRICS

    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))  # registered for this test only
    name = "first_logit"
    bitscout.register_metric(name, lambda model, data: float(model(torch.from_numpy(data[0][:1]))[0, 0]),
                             direction="minimize")  # fmt: skip
    result = bitscout.search(trained, _digits(), SPACE, objective={name: -1.0},
                             strategy="bruteforce", quiet=True)  # fmt: skip
    qmodel = result.quantized_model()
    x, _ = _digits()
    assert result.best.metrics[name] == float(qmodel(torch.from_numpy(x[:1]))[0, 0])
    # the winner's plan (best.toml's table) builds the same model
    again = quantize_model(trained, result.best.plan)
    assert torch.equal(again(torch.from_numpy(x)), qmodel(torch.from_numpy(x)))


def test_a_pruned_model_is_searched_with_its_effective_weights():
    """torch.nn.utils.prune keeps `weight` as a tensor computed from weight_orig * weight_mask,
    which copy.deepcopy refuses: the search copies the effective weight instead."""
    from torch.nn.utils import prune

    x, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    space = {"setup": {"by": "name"}, "seed": {"default": {"config": {"name": ["NA"]}},
             "0": {"config": {"name": ["integer"], "weight_width": [8], "weight_frac_width": [6],
                              "data_in_width": [16], "data_in_frac_width": [8]}}}}  # fmt: skip
    result = bitscout.search(model, (x, y), space, strategy="bruteforce")
    layer = result.quantized_model()[0]
    effective = (model[0].weight_orig * model[0].weight_mask).detach().double()
    expected = torch.clamp(torch.round(effective * 64), -128, 127) / 64  # ap_fixed<8,2>
    assert torch.equal(layer.quant.weight.quantize_values(layer.weight).double(), expected)
    assert hasattr(model[0], "weight_orig")  # the caller's model keeps its pruning
