"""`bitscout.sensitivity` and `bitscout sensitivity`: probes against a direct computation with
an independent fixed-point reference, the cost, Hutchinson against exact Hessian traces, the
files, the report section and the command line's errors."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from cli_support import error_problems, run_cli
from torch import nn
from torch.func import functional_call

import bitscout
from bitscout.analysis.sensitivity import probe_plan, probes
from bitscout.data.containers import prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.hessian import hessian_traces
from bitscout.quant.space import parse_space

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.toml"
SPACE = {
    "setup": {"by": "name"},
    "seed": {
        "default": {
            "config": {
                "name": ["integer"],
                "data_in_width": [4, 8],  # data_in_frac_width absent: "NA", width // 2
                "weight_width": [2, 3, 4],
                "weight_frac_width": [3, 5],
                "bias_width": [8],  # one choice: fixed, not searched, so float in every probe
            }
        }
    },
}


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 2-layer MLP trained briefly on the first 1,200 digits; the rest validate."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(model(x[:1200]), y[:1200]).backward()
        opt.step()
    return model.eval(), x[1200:], y[1200:]


@pytest.fixture(scope="module")
def result(digits):
    model, x, y = digits
    return bitscout.sensitivity(model, (x, y), SPACE, quiet=True)


def ref_fixed(t: torch.Tensor, width: int, frac: int) -> torch.Tensor:
    """Independent signed fixed point: round half to even of t * 2**frac (NumPy, float64),
    clamped to the signed range of `width` bits, divided by 2**frac."""
    k = np.clip(np.round(t.detach().numpy().astype(np.float64) * 2.0**frac),
                -(2 ** (width - 1)), 2 ** (width - 1) - 1)  # fmt: skip
    return torch.from_numpy(k / 2.0**frac).to(torch.float32)


def direct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: int, tensor: str,
           width: int, frac: int) -> tuple[float, float]:  # fmt: skip
    """Accuracy and loss with layer `layer`'s weight or input quantized, everything else float."""
    net = copy.deepcopy(model)
    target = net[layer]
    if tensor == "weight":
        with torch.no_grad():
            target.weight.copy_(ref_fixed(target.weight, width, frac))
    else:
        target.register_forward_pre_hook(lambda m, args: (ref_fixed(args[0], width, frac),))
    with torch.no_grad():
        logits = net(x)
    correct = int((logits.argmax(1) == y).sum())
    return correct / len(y), float(F.cross_entropy(logits.double(), y))


def row(table: pd.DataFrame, dimension: str, choice: object) -> pd.Series:
    found = table[(table["dimension"] == dimension) & (table["choice"] == choice)]
    assert len(found) == 1
    return found.iloc[0]


@pytest.mark.parametrize(
    ("dimension", "choice", "tensor", "width", "frac"),
    [
        ("0/weight_width", 2, "weight", 2, 3),  # frac: weight_frac_width's first choice
        ("2/weight_width", 4, "weight", 4, 3),
        ("0/weight_frac_width", 5, "weight", 2, 5),  # width: weight_width's first choice
        ("0/data_in_width", 4, "data_in", 4, 2),  # frac "NA": width // 2
        ("2/data_in_width", 8, "data_in", 8, 4),
    ],
)
def test_probe_matches_direct_computation(digits, result, dimension, choice, tensor, width, frac):
    model, x, y = digits
    acc, loss = direct(model, x, y, int(dimension.split("/")[0]), tensor, width, frac)
    found = row(result.table, dimension, choice)
    assert found["accuracy"] == acc
    assert found["loss"] == pytest.approx(loss, abs=1e-6)
    float_acc, float_loss = result.float_metrics["accuracy"], result.float_metrics["loss"]
    assert found["accuracy_drop"] == pytest.approx(float_acc - acc, abs=1e-12)
    assert found["loss_increase"] == pytest.approx(loss - float_loss, abs=1e-6)


def test_float_row_is_the_float_model(digits, result):
    model, x, y = digits
    with torch.no_grad():
        logits = model(x)
    first = result.table.iloc[0]
    assert first["layer"] == "float"
    assert first["accuracy"] == int((logits.argmax(1) == y).sum()) / len(y)
    assert first["loss"] == pytest.approx(float(F.cross_entropy(logits.double(), y)), abs=1e-6)
    assert first["accuracy_drop"] == 0 and first["loss_increase"] == 0


def test_cost_is_the_sum_of_the_choices(digits, result):
    space = parse_space(SPACE, digits[0])
    table = result.table[result.table["layer"] != "float"]
    assert len(table) == sum(len(d.choices) for d in space.dimensions) == 14
    assert space.size == 144  # the product: what a brute force costs
    pairs = {(d.name, c) for d in space.dimensions for c in d.choices}
    assert set(zip(table["dimension"], table["choice"], strict=True)) == pairs
    assert list(table.columns[:8]) == ["layer", "tensor", "dimension", "choice", "format",
                                       "fields", "accuracy", "loss"]  # fmt: skip


def test_each_probe_quantizes_its_tensor_only(digits):
    space = parse_space(SPACE, digits[0])
    for p in probes(space):
        plan = probe_plan(space, p)
        quantized = {path: q for path, q in plan.items() if q is not None}
        assert list(quantized) == [p.layer]  # fx name of "0" is "0"
        formats = {k: v for k, v in quantized[p.layer].tensors.items() if v is not None}
        assert list(formats) == [p.tensor]
        assert quantized[p.layer].accum is None and quantized[p.layer].result is None


def test_type_keys_do_not_leak_through_default():
    """By type, a probe of `default` (here the conv) must leave the linear layer float."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    space = parse_space({"setup": {"by": "type"}, "seed": {
        "default": {"config": {"name": ["integer"], "weight_width": [2, 4]}},
        "linear": {"config": {"name": ["integer"], "weight_width": [4, 8]}},
    }}, model)  # fmt: skip
    for p in probes(space):
        plan = probe_plan(space, p)
        quantized = [path for path, q in plan.items() if q is not None]
        assert quantized == (["2"] if p.layer == "linear" else ["0"])


def test_name_dimension_probes_each_format(digits):
    space = parse_space({"setup": {"by": "name"}, "seed": {
        "default": {"config": {"name": ["NA"]}},
        "2": {"config": {"name": ["NA", "integer"], "weight_width": [2, 4]}},
    }}, digits[0])  # fmt: skip
    found = [(p.dimension, p.choice, p.format, p.tensor) for p in probes(space)]
    assert found == [("2/name", "NA", "NA", "layer"), ("2/name", "integer", "integer", "layer"),
                     ("2/weight_width", 2, "integer", "weight"),
                     ("2/weight_width", 4, "integer", "weight")]  # fmt: skip


def test_ranking_orders_layers_by_largest_drop(result):
    r = result.ranking
    assert list(r.columns[:5]) == ["rank", "layer", "probes", "max_accuracy_drop",
                                   "max_loss_increase"]  # fmt: skip
    assert list(r["rank"]) == [1, 2]
    probes_only = result.table[result.table["layer"] != "float"]
    for record in r.to_dict("records"):
        mine = probes_only[probes_only["layer"] == record["layer"]]
        assert record["max_accuracy_drop"] == mine["accuracy_drop"].max()
        assert record["probes"] == len(mine) == 7
    keys = list(zip(r["max_accuracy_drop"], r["max_loss_increase"], strict=True))
    assert keys == sorted(keys, reverse=True)
    assert r["hessian_trace"].isna().all()  # not asked for


def test_hutchinson_matches_closed_form_of_softmax_regression():
    """For logits W x + b and mean cross-entropy, the Hessian w.r.t. W has the trace
    mean_i sum_k p_ik (1 - p_ik) * |x_i|^2."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 3))
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
    exact = float(((p * (1 - p)).sum(1) * (x * x).sum(1)).mean())
    found = hessian_traces(model, prepare((x, y)), {"0": ["0"]}, 500, seed=0)["0"]
    assert found.trace == pytest.approx(exact, rel=0.02)
    assert found.weights == 15 and found.per_weight == pytest.approx(found.trace / 15)


def test_hutchinson_matches_exact_hessian_of_a_hidden_layer():
    torch.manual_seed(1)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w0 = model[0].weight.detach().clone()

    def loss(w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, {"0.weight": w}, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, w0).reshape(w0.numel(), -1)
    exact = float(hessian.diagonal().sum())
    data = prepare((x, y))
    found = hessian_traces(model, data, {"0": ["0"]}, 4000, seed=0)["0"].trace
    assert found == pytest.approx(exact, rel=0.05)
    again = hessian_traces(model, data, {"0": ["0"], "2": ["2"]}, 4000, seed=0)
    assert again["0"].trace == found  # seeded, and independent of the other layers asked for
    assert hessian_traces(model, data, {"0": ["0"]}, 50, seed=1)["0"].trace != found
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # the caller's model untouched


def test_api_hessian_and_files(digits, tmp_path):
    model, x, y = digits
    found = bitscout.sensitivity(model, (x, y), SPACE, hessian_samples=20, seed=3,
                                 metrics=["average_bitwidth"], out=tmp_path, quiet=True)  # fmt: skip
    direct_traces = hessian_traces(model, prepare((x, y)), {"0": ["0"], "2": ["2"]}, 20, 3)
    by_layer = found.ranking.set_index("layer")
    for key, trace in direct_traces.items():
        assert by_layer.loc[key, "hessian_trace"] == pytest.approx(trace.trace)
        assert by_layer.loc[key, "weights"] == trace.weights
    assert "average_bitwidth" in found.table
    assert isinstance(found, bitscout.SensitivityResult) and found.out == tmp_path
    written = pd.read_csv(tmp_path / "sensitivity.csv")
    assert written["schema_version"].eq(3).all() and len(written) == len(found.table)
    assert (tmp_path / "sensitivity.png").stat().st_size > 1000
    assert "## Sensitivity" in (tmp_path / "report.md").read_text()


def test_api_refuses_bad_arguments(digits):
    model, x, y = digits
    with pytest.raises(ConfigError, match="hessian_samples"):
        bitscout.sensitivity(model, (x, y), SPACE, hessian_samples=-1)
    with pytest.raises(ConfigError, match="latency"):
        bitscout.sensitivity(model, (x, y), SPACE, metrics=["latency"], quiet=True)
    with pytest.raises(ConfigError, match="acuracy"):
        bitscout.sensitivity(model, (x, y), SPACE, metrics=["acuracy"], quiet=True)
    with pytest.raises(ConfigError, match=r"torch\.nn\.Module"):
        bitscout.sensitivity("model", (x, y), SPACE)


def test_api_leaves_the_callers_model_alone(digits):
    model, x, y = digits
    mine = copy.deepcopy(model).train()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    bitscout.sensitivity(mine, (x, y), SPACE, hessian_samples=3, quiet=True)
    assert mine.training and all(p.requires_grad for p in mine.parameters())
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`bitscout sensitivity examples/digits_mlp.toml` end to end (trains the model first)."""
    from bitscout.cli import main

    out = tmp_path_factory.mktemp("sens")
    assert main(["sensitivity", str(EXAMPLE), "--out", str(out), "--hessian", "5"]) == 0
    return out


def test_cli_writes_every_output(cli_run):
    files = {p.name for p in cli_run.iterdir()}
    assert {"sensitivity.csv", "sensitivity_ranking.csv", "sensitivity.png", "sensitivity.json",
            "report.md", "model.pt"} <= files  # fmt: skip
    table = pd.read_csv(cli_run / "sensitivity.csv")
    assert len(table) == 1 + 3 * (2 + 4 + 3)  # float + (data_in, weight, frac) per layer
    assert {"accuracy_drop", "loss_increase", "average_bitwidth"} <= set(table.columns)
    ranking = pd.read_csv(cli_run / "sensitivity_ranking.csv")
    assert sorted(ranking["layer"]) == ["seq_blocks_0", "seq_blocks_2", "seq_blocks_4"]
    assert ranking["hessian_trace"].notna().all()
    summary = json.loads((cli_run / "sensitivity.json").read_text())
    assert summary["command"].endswith("--hessian 5") and summary["probes"] == 27
    report = (cli_run / "report.md").read_text()
    assert "## Sensitivity" in report and "![sensitivity](sensitivity.png)" in report
    assert "bitscout sensitivity" in report


def test_cli_on_a_run_directory_keeps_its_report(cli_run, tmp_path, capsys):
    run = tmp_path / "run"
    load = str(cli_run / "model.pt")
    args = ["search", str(EXAMPLE), "--out", str(run), "--load", load, "--trials", "4", "--quiet"]
    assert run_cli(args, capsys).rc == 0
    assert run_cli(["sensitivity", str(run)], capsys).rc == 0
    report = (run / "report.md").read_text()
    assert "## Setup" in report and report.count("## Sensitivity") == 1
    assert report.index("## Sensitivity") < report.index("## Plots")
    assert len(pd.read_csv(run / "sensitivity.csv")) == 28
    assert run_cli(["sensitivity", str(run)], capsys).rc == 0  # replaced, not appended
    assert (run / "report.md").read_text().count("## Sensitivity") == 1
    assert run_cli(["report", str(run)], capsys).rc == 0  # a rewritten report keeps it
    assert (run / "report.md").read_text().count("## Sensitivity") == 1


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    bare = tmp_path / "bare.toml"
    bare.write_text('model = "mlp"\ndataset = "digits"\n')
    outcome = run_cli(["sensitivity", str(bare), "--out", str(tmp_path / "o")], capsys)
    assert error_problems(outcome) == [] and "search.search_space" in outcome.err
    assert not (tmp_path / "o").exists()
    outcome = run_cli(["sensitivity", str(EXAMPLE), "--hessian", "-1"], capsys)
    assert error_problems(outcome) == [] and "--hessian" in outcome.err
    outcome = run_cli(["sensitivity", str(EXAMPLE), "--seed", "-3", "--out", str(tmp_path / "s")],
                      capsys)  # fmt: skip
    assert error_problems(outcome) == [] and "--seed" in outcome.err
    assert not (tmp_path / "s").exists()  # refused before training anything
    outcome = run_cli(["sensitivity", str(tmp_path / "missing.toml")], capsys)
    assert error_problems(outcome) == []
    outcome = run_cli(["sensitivity", str(tmp_path)], capsys)  # a directory, not a run
    assert error_problems(outcome) == [] and "not a finished search directory" in outcome.err


def test_the_python_door_prints_nothing_unless_asked(digits, capsys, caplog):
    """As bitscout.search: progress goes to the "bitscout" logger, stdout only with show=True."""
    model, x, y = digits
    with caplog.at_level(logging.INFO, logger="bitscout"):
        bitscout.sensitivity(model, (x[:60], y[:60]), SPACE)
    assert capsys.readouterr().out == ""
    assert caplog.records
    bitscout.sensitivity(model, (x[:60], y[:60]), SPACE, show=True)
    assert capsys.readouterr().out != ""
