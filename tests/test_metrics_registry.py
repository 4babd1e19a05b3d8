"""Tests for bitscout.evaluate.metrics' registry: unknown names listed, every metric
documented, and users' metrics (issue 20, item 10) refused when named like an output column,
kept through a run with their constraint, direction and unit. Split from tests/test_metrics.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_support import _ctx
from torch import nn

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import (
    METRICS,
    compute_metrics,
    get_metric,
)

# --- registry -------------------------------------------------------------------------------


def test_unknown_metric_lists_known():
    with pytest.raises(ConfigError, match="accuracy") as info:
        get_metric("acuracy", "search.metrics")
    assert info.value.key == "search.metrics"
    with pytest.raises(ConfigError, match="accuracy"):
        compute_metrics(["nope"], _ctx("jsc-tiny"))


def test_every_metric_is_documented():
    expected = {
        "accuracy", "loss", "latency", "model_size", "model_size_bits", "flops", "bops",
        "average_bitwidth", "memory_density",
    }  # fmt: skip
    assert expected <= set(METRICS.names())
    for name in METRICS:
        m = get_metric(name)
        assert m.name == name
        assert m.doc.strip() and m.unit.strip()
        assert m.direction in ("maximize", "minimize")
        assert m.kind in ("forward", "static", "timing")
    assert get_metric("accuracy").direction == "maximize"
    assert get_metric("latency").kind == "timing"


# --- the user's metrics (issue 20, item 10) -------------------------------------------------

RESERVED_NAMES = ["objective", "number", "state", "reason", "cached", "schema_version",
                  "duration_s", "feasible", "proposals", "scaled_r2", "objective_r2"]  # fmt: skip


@pytest.fixture(scope="module")
def user_inputs() -> tuple[nn.Module, tuple[np.ndarray, np.ndarray], dict]:
    from sklearn.datasets import load_digits

    import bitscout

    x, y = load_digits(return_X_y=True)
    x, y = (x[:300] / 16.0).astype(np.float32), y[:300]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    bitscout.train(model, (x, y), bitscout.TrainOptions(epochs=30, learning_rate=1e-2))
    layer = {"name": ["integer"], "data_in_width": [3, 8], "weight_width": [2, 8],
             "bias_width": [8]}  # fmt: skip
    space = {"setup": {"by": "name"}, "seed": {"default": {"config": layer}}}
    return model, (x, y), space


def _agreement(model: nn.Module, data: tuple[np.ndarray, np.ndarray]) -> float:
    """The fraction of rows predicted right, computed by the user."""
    with torch.no_grad():
        return float((model(torch.from_numpy(data[0])).argmax(1).numpy() == data[1]).mean())


@pytest.mark.parametrize("name", RESERVED_NAMES)
def test_a_metric_named_like_an_output_column_is_refused_by_both_doors(
    name, monkeypatch, user_inputs
):
    import bitscout

    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))  # registered for this test only
    with pytest.raises(ConfigError, match=rf"^metrics\.{name}: is reserved for an output column"):
        bitscout.register_metric(name, _agreement)
    assert name not in METRICS
    model, data, space = user_inputs
    with pytest.raises(ConfigError, match=rf"^metrics\.{name}: is reserved for an output column"):
        bitscout.search(model, data, space, metrics={name: _agreement}, quiet=True)


def test_a_users_metric_and_its_constraint_survive_the_run(tmp_path, capsys, user_inputs):
    import json

    import bitscout
    from bitscout.cli.main import main

    model, data, space = user_inputs
    out = tmp_path / "run"
    result = bitscout.search(model, data, space, strategy="bruteforce", out=out, quiet=True,
                             metrics={"r2": _agreement, "cost": (lambda m, d: 1.0, "minimize")},
                             constraints=["r2 >= 0.9"])  # fmt: skip
    trials = result.trials
    assert trials["r2"].tolist() == trials["accuracy"].tolist()  # the user's own definition
    feasible = trials[trials["r2"] >= 0.9]
    assert 0 < len(feasible) < len(trials)  # the constraint decides something
    assert result.best is not None and result.best.metrics["r2"] == feasible["r2"].max()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["user_metrics"] == {"r2": {"direction": "maximize", "unit": ""},
                                       "cost": {"direction": "minimize", "unit": ""}}  # fmt: skip
    assert summary["objective"]["constraints"] == ["r2 >= 0.9"]
    assert (out / "report.md").is_file()
    loaded = bitscout.SearchResult.load(out)
    assert loaded.best is not None and loaded.best.metrics["r2"] == result.best.metrics["r2"]
    assert main(["report", str(out)]) == 0
    strict = 0.5 * float(trials["r2"].max()) + 0.5 * 0.9
    assert main(["report", str(out), "--constraint", f"r2 >= {strict}", "--name", "strict"]) == 0
    assert main(["report", str(out), "--objective", "cost=1.0,r2=1.0", "--name", "mix"]) == 0
    capsys.readouterr()
    assert (out / "strict" / "report.md").is_file() and (out / "mix" / "report.md").is_file()


def test_recorded_metrics_keep_their_direction_and_unit():
    from bitscout.evaluate.metrics import from_records, user_metric, user_records

    metrics = [user_metric("r2", _agreement), user_metric("ms", _agreement, direction="minimize",
                                                          unit="ms")]  # fmt: skip
    records = user_records([*metrics, get_metric("accuracy")])  # built-ins are not recorded
    assert records == {"r2": {"direction": "maximize", "unit": ""},
                       "ms": {"direction": "minimize", "unit": "ms"}}  # fmt: skip
    back = from_records(records)
    assert {n: (m.direction, m.unit, m.kind) for n, m in back.items()} == {
        "r2": ("maximize", "", "model"), "ms": ("minimize", "ms", "model")}  # fmt: skip
    with pytest.raises(ValueError, match="read back from a run: pass its function"):
        back["r2"].compute(_ctx("jsc-tiny"))
    with pytest.raises(ConfigError, match=r"user_metrics\.r2: needs a direction"):
        from_records({"r2": {"direction": "up"}})
