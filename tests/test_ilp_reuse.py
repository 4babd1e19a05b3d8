"""An `ilp` search reusing a joint sensitivity result (`bitscout sensitivity --joint`): the
joint probes against a model quantized by hand, no probe evaluated twice and the same trials
as without it, a result of another measurement refused (given) or ignored (found), a damaged
one refused, and the Python and TOML doors alike."""

from __future__ import annotations

import ast
import copy
import json
import logging
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from cli_support import base_doc, edit, run_cli, write_config
from digits_support import trained_digits_mlp

import bitscout
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator
from bitscout.study.settings import parse_settings, python_settings
from bitscout.study.store.base import CACHED, STEP
from bitscout.study.strategies.ilp import REUSED
from bitscout.study.strategies.ilp_reuse import FILE, probes_digest

LAYER = {"name": ["integer"], "data_in_width": [4, 8], "data_in_frac_width": [2],
         "weight_width": [2, 3, 4, 8], "weight_frac_width": [1, 3, 6]}  # fmt: skip
TABLE = {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}}
OBJECTIVE = {"accuracy": 1.0, "average_bitwidth": -0.01}
TRIALS = 24


@pytest.fixture(scope="module")
def mlp():
    return trained_digits_mlp()


@pytest.fixture(scope="module")
def joint(mlp, tmp_path_factory):
    """The joint sensitivity result of the digits MLP over TABLE: its folder."""
    model, data = mlp
    out = tmp_path_factory.mktemp("sens")
    bitscout.sensitivity(model, data, TABLE, joint=True, out=out, quiet=True)
    return out


def _fixed(t: torch.Tensor, width: int, frac: int) -> torch.Tensor:
    """Signed fixed point by hand: round half to even (NumPy, float64), clamped."""
    k = np.clip(np.round(t.detach().numpy().astype(np.float64) * 2.0**frac),
                -(2 ** (width - 1)), 2 ** (width - 1) - 1)  # fmt: skip
    return torch.from_numpy(k / 2.0**frac).to(torch.float32)


def _by_hand(model, x, y, config) -> tuple[float, float]:
    """Accuracy and loss of `config` over TABLE: each Linear's input (2 fractional bits) and
    weights quantized as it says, biases float (the table sets none)."""
    net = copy.deepcopy(model)
    for i in (0, 2):
        layer, width = net[i], config[f"{i}/data_in_width"]
        with torch.no_grad():
            layer.weight.copy_(_fixed(layer.weight, config[f"{i}/weight_width"],
                                      config[f"{i}/weight_frac_width"]))  # fmt: skip
        layer.register_forward_pre_hook(lambda m, a, w=width: (_fixed(a[0], w, 2),))
    with torch.no_grad():
        logits = net(x)
    return int((logits.argmax(1) == y).sum()) / len(y), float(F.cross_entropy(logits.double(), y))


def _expected_probes() -> list[dict]:
    """The ILP's probes of TABLE, written out: widths at their largest, frac widths at their
    first; then each (layer, tensor) at each joint choice of its fields."""
    ref = {f"{i}/{f}": v for i in (0, 2)
           for f, v in (("data_in_width", 8), ("weight_width", 8), ("weight_frac_width", 1))}  # fmt: skip
    found = [ref]
    for i in (0, 2):
        found += [{**ref, f"{i}/data_in_width": w} for w in (4, 8)]
        found += [{**ref, f"{i}/weight_width": w, f"{i}/weight_frac_width": f}
                  for w in (2, 3, 4, 8) for f in (1, 3, 6)]  # fmt: skip
    return [dict(t) for t in dict.fromkeys(tuple(sorted(c.items())) for c in found)]


def _key(config) -> tuple:
    return tuple(sorted(dict(config).items()))


def test_the_joint_probes_are_the_ilps_and_measure_as_the_model_quantized_by_hand(mlp, joint):
    model, (x, y) = mlp
    raw = json.loads((joint / FILE).read_text())
    probes = raw["probes"]
    assert sorted(_key(p["config"]) for p in probes) == sorted(map(_key, _expected_probes()))
    assert probes[0]["tensor"] == "reference" and len(probes) == 25  # 1 + 2 x (2 + 12) - 4
    for p in probes:
        acc, loss = _by_hand(model, x, y, p["config"])
        assert p["metrics"]["accuracy"] == acc
        assert p["metrics"]["loss"] == pytest.approx(loss, abs=1e-6)
    # every metric a search reports, so that a search can take them as its own
    assert {"accuracy", "loss", "bops", "average_bitwidth", "overflow_rate"} <= set(raw["metrics"])
    assert raw["probes_sha256"] == probes_digest(probes)
    # the usual outputs are those of a run without --joint
    usual = bitscout.sensitivity(model, (x, y), TABLE, quiet=True).table
    written = pd.read_csv(joint / "sensitivity.csv")
    assert list(written.columns) == ["schema_version", *usual.columns]
    assert written["accuracy"].tolist() == usual["accuracy"].tolist()
    kept = json.loads((joint / "sensitivity.json").read_text())
    assert kept["probes"] == len(usual) - 1 and set(kept["float"]) == {"accuracy", "loss"}
    with pytest.raises(ConfigError, match="joint: needs out="):
        bitscout.sensitivity(model, (x, y), TABLE, joint=True)


@pytest.fixture
def computed(monkeypatch):
    """The configs the evaluators compute (not take from their cache), as sorted tuples."""
    seen: list[tuple] = []
    original = Evaluator._compute

    def spy(self, keys, labels):
        seen.extend(_key(ast.literal_eval(label)) for label in labels)
        return original(self, keys, labels)

    monkeypatch.setattr(Evaluator, "_compute", spy)
    return seen


def _trials(result) -> list:
    return sorted(result.study.trials, key=lambda t: t.number)


def test_a_search_reusing_the_result_evaluates_no_probe_again_and_ends_alike(mlp, joint, computed):
    model, data = mlp
    kw = {"objective": OBJECTIVE, "strategy": "ilp", "trials": TRIALS, "quiet": True}
    plain = bitscout.search(model, data, TABLE, **kw)
    plain_computed = list(computed)
    computed.clear()
    reused = bitscout.search(model, data, TABLE, sensitivity=joint / FILE, **kw)
    probes = set(map(_key, _expected_probes()))
    assert probes.isdisjoint(computed)  # not one probe evaluated
    a, b = _trials(plain), _trials(reused)
    assert [t.params for t in a] == [t.params for t in b]  # the same trials, in order
    assert [t.user_attrs["metrics"] for t in a] == [t.user_attrs["metrics"] for t in b]
    assert reused.best.config == plain.best.config
    marked = [t for t in b if t.user_attrs.get(REUSED)]
    asked = [t for t in b if t.user_attrs[STEP] == 0]  # the probes the lazy search asked for
    assert marked == asked and all(t.user_attrs[CACHED] for t in marked)
    assert len(computed) == len(plain_computed) - len(asked)
    assert len(b) == TRIALS  # reused probes are trials: they count toward n_trials


def test_a_search_reusing_the_result_resumed_among_its_probes_ends_as_an_uninterrupted_one(
    mlp, joint, tmp_path, computed
):
    model, data = mlp
    kw = {"objective": OBJECTIVE, "strategy": "ilp", "quiet": True, "sensitivity": joint / FILE}
    bitscout.search(model, data, TABLE, trials=3, out=tmp_path / "r", **kw)  # stopped early
    whole = bitscout.search(model, data, TABLE, trials=TRIALS, out=tmp_path / "r", **kw)
    fresh = bitscout.search(model, data, TABLE, trials=TRIALS, **kw)
    a, b = _trials(whole), _trials(fresh)
    assert [t.params for t in a] == [t.params for t in b] and len(a) == TRIALS
    assert [t.user_attrs.get(REUSED) for t in a] == [t.user_attrs.get(REUSED) for t in b]
    assert set(map(_key, _expected_probes())).isdisjoint(computed)  # no probe, in any run


def test_warm_start_ilp_reuses_the_probes_too(mlp, joint, computed):
    model, data = mlp
    result = bitscout.search(
        model,
        data,
        TABLE,
        objective=OBJECTIVE,
        strategy="tpe",
        trials=8,
        warm_start="ilp",
        sensitivity=joint,
        quiet=True,
    )  # the folder
    assert computed and set(map(_key, _expected_probes())).isdisjoint(computed)
    assert len(result.trials) == 8  # the survey's probes are not trials, as without reuse


def _other_state(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].bias[0] += 1e-3
    return other


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("state", "the model's state differs"),
        ("rows", "the data rows differ (399 rows here, 400 in the result)"),
        ("values", "the data rows differ (as many, 400, with other values)"),
        ("space", "the space differs (at 0.weight_frac_width)"),
        ("loss", "loss_fn differs"),
        ("latency", "it does not hold latency, which this search measures"),
    ],
)
def test_a_given_result_of_another_measurement_is_refused_in_one_line(mlp, joint, change, words):
    model, (x, y) = mlp
    table = copy.deepcopy(TABLE)
    kw: dict = {"objective": OBJECTIVE, "strategy": "ilp", "trials": TRIALS, "quiet": True}
    if change == "state":
        model = _other_state(model)
    elif change == "rows":
        x, y = x[:-1], y[:-1]
    elif change == "values":
        x = x.clone()
        x[0, 0] += 1.0
    elif change == "space":
        table["seed"]["default"]["config"]["weight_frac_width"] = [1, 3, 5]
    elif change == "loss":
        kw["loss_fn"] = lambda out, target: F.cross_entropy(out, target) * 2.0
    else:
        kw["objective"] = {**OBJECTIVE, "latency": -0.001}
    with pytest.raises(ConfigError) as caught:
        bitscout.search(model, (x, y), table, sensitivity=joint, **kw)
    err = caught.value
    assert err.file and err.key == str(joint / FILE) and "\n" not in str(err)
    assert err.rule == f"is a sensitivity result of another measurement: {words}"


def test_a_result_of_another_measurement_found_in_the_run_directory_is_ignored(
    mlp, joint, tmp_path, caplog
):  # found and reused: the command line's test below
    model, data = mlp
    shutil.copy(joint / FILE, tmp_path / FILE)
    with caplog.at_level(logging.INFO, logger="bitscout"):
        ignored = bitscout.search(_other_state(model), data, TABLE, objective=OBJECTIVE,
                                  strategy="ilp", trials=6, out=tmp_path)  # fmt: skip
    assert not any(t.user_attrs.get(REUSED) for t in ignored.study.trials)
    assert f"ilp: {tmp_path / FILE} not reused: the model's state differs" in caplog.text


def _rewrite(path, edit_raw) -> None:
    raw = json.loads(path.read_text())
    edit_raw(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("damage", ["metric", "dropped", "text", "garbled row"])
@pytest.mark.parametrize("where", ["given", "found"])
def test_a_damaged_result_is_refused_never_reused_in_part(mlp, joint, tmp_path, damage, where):
    model, data = mlp
    path = tmp_path / FILE
    shutil.copy(joint / FILE, path)
    if damage == "metric":  # edited: the checksum no longer holds
        _rewrite(path, lambda raw: raw["probes"][3]["metrics"].update(accuracy=1.0))
        words = "is damaged: its probes do not match their checksum"
    elif damage == "dropped":  # cut short, checksum recomputed: the probe set is short
        _rewrite(path, lambda raw: raw.update(probes=raw["probes"][:-1],
                                              probes_sha256=probes_digest(raw["probes"][:-1])))  # fmt: skip
        words = "is damaged: 1 of the space's 25 joint probes missing, 0 rows that are not one"
    elif damage == "garbled row":
        probes = json.loads(path.read_text())["probes"]
        del probes[2]["metrics"]["loss"]
        _rewrite(path, lambda raw: raw.update(probes=probes, probes_sha256=probes_digest(probes)))
        words = "is damaged: probe 2 lacks its config or a metric"
    else:
        path.write_text(path.read_text()[:-200])
        words = f"is not a readable {FILE}"
    kw = {"objective": OBJECTIVE, "strategy": "ilp", "trials": TRIALS, "quiet": True}
    place = {"sensitivity": path} if where == "given" else {"out": tmp_path}
    with pytest.raises(ConfigError, match="^" + str(path).replace("\\", "\\\\")) as caught:
        bitscout.search(model, data, TABLE, **kw, **place)
    assert caught.value.rule.startswith(words)


def _strategy(name: str, **setup) -> dict:
    metrics = {"accuracy": {"scale": 1.0, "direction": "maximize"}}
    return {"strategy": {"name": name, "setup": setup, "metrics": metrics}}


def test_the_toml_and_python_doors_take_sensitivity_alike(tmp_path):
    toml = parse_settings(_strategy("ilp", n_trials=4, sensitivity=str(tmp_path)), 0)
    python = python_settings("ilp", toml.objective, trials=4, sensitivity=tmp_path)
    assert toml.sensitivity == python.sensitivity == str(tmp_path)
    warm = _strategy("tpe", warm_start="ilp", sensitivity="x")
    assert parse_settings(warm, 0).sensitivity == "x"
    rule = 'applies to strategy "ilp" and warm_start = "ilp" only'
    with pytest.raises(ConfigError) as toml_err:
        parse_settings(_strategy("tpe", sensitivity="x"), 0)
    with pytest.raises(ConfigError) as python_err:
        python_settings("tpe", toml.objective, sensitivity="x")
    assert (toml_err.value.key, python_err.value.key) == ("search.strategy.setup.sensitivity",
                                                          "sensitivity")  # fmt: skip
    assert toml_err.value.rule == python_err.value.rule == rule
    with pytest.raises(ConfigError, match="sensitivity: must be a path"):
        python_settings("ilp", toml.objective, sensitivity=3)


def test_the_command_line_writes_a_joint_result_that_a_config_search_reuses(tmp_path, capsys):
    doc = edit(base_doc(), "search.strategy.name", "ilp")
    doc = edit(doc, "search.strategy.setup.n_trials", 4)
    config = write_config(tmp_path / "ilp.toml", doc)
    sens = tmp_path / "sens"
    outcome = run_cli(["sensitivity", str(config), "--joint", "--out", str(sens)], capsys)
    assert outcome.rc == 0 and FILE in outcome.out
    raw = json.loads((sens / FILE).read_text())
    assert raw["command"].split()[-1] == "--joint"
    given = write_config(tmp_path / "given.toml",
                         edit(doc, "search.strategy.setup.sensitivity", str(sens)))  # fmt: skip
    load = ["--load", str(sens / "model.pt"), "--quiet"]
    for cfg, out in ((given, tmp_path / "given"), (config, sens)):  # given, then found
        assert run_cli(["search", str(cfg), "--out", str(out), *load], capsys).rc == 0
        journal = (out / "study.journal").read_text()  # the trials' attributes, as stored
        assert re.search(rf'"{REUSED}":\s*true', journal)
