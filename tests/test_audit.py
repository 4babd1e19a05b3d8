"""A search audits its fast engine (issue 20, item 2): summary.json and report.md say how many
candidates were re-derived by the plain path and that they matched; a mismatch stops the
search with both figures; `audit_rate` is a search parameter of both doors."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from test_evaluate_audit import NanAtTwoBits, Plain, _plain, _trained
from test_evaluate_unfused import Tiny

import bitscout
from bitscout.errors import ConfigError, SearchFailed
from bitscout.evaluate.engine.runner import Runner
from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant.space import SearchSpace
from bitscout.study.settings import StrategySettings, parse_settings
from bitscout.zoo.data import load_dataset

LAYER = {"name": ["integer"], "data_in_width": [8], "weight_width": [2, 3, 4, 6, 8]}
SPACE = {"setup": {"by": "name"}, "seed": {"default": {"config": {"name": ["NA"]}},
                                           "seq.0": {"config": LAYER}, "seq.2": {"config": LAYER}}}  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", seed=3)
    return data.x_val, data.y_val


@pytest.fixture(scope="module")
def plain(digits):
    return _trained(Plain, *digits)


def _search(model, data, out, **kwargs):
    return bitscout.search(model, data, SPACE, strategy="bruteforce", out=out, quiet=True,
                           **kwargs)  # fmt: skip


def _summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_summary_and_report_say_what_was_rederived(plain, digits, tmp_path):
    _search(plain, digits, tmp_path / "default")
    audit = _summary(tmp_path / "default")["audit"]
    assert audit["rate"] == 1 / 50 and audit["engine"] == "fast"
    assert audit["rederived"] == audit["matched"] >= 2
    report = (tmp_path / "default" / "report.md").read_text()
    assert f"all {audit['rederived']} matched" in report and "1 in 50" in report

    _search(plain, digits, tmp_path / "every", audit_rate=1.0)
    assert _summary(tmp_path / "every")["audit"]["rederived"] == 25  # every candidate
    assert _summary(tmp_path / "every")["audit"]["matched"] == 25

    _search(plain, digits, tmp_path / "off", audit_rate=0)
    assert _summary(tmp_path / "off")["audit"]["rederived"] == 0
    assert "off (audit_rate = 0)" in (tmp_path / "off" / "report.md").read_text()


def test_a_plain_path_search_says_no_audit_was_needed(digits, tmp_path):
    _search(_trained(NanAtTwoBits, *digits), digits, tmp_path)
    assert _summary(tmp_path)["audit"]["engine"] == "plain"
    assert "every candidate was scored by the plain path" in (tmp_path / "report.md").read_text()


def test_an_injected_mismatch_stops_the_search_with_both_figures(plain, digits, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    monkeypatch.setattr(Evaluator, "_cross_check", lambda self, runner: "")  # let it through
    real = Runner.logits
    monkeypatch.setattr(Runner, "logits", lambda *a: (-b for b in real(*a)))  # then wrong
    tables = {"default": {"name": ["NA"]}, "seq.0": LAYER, "seq.2": LAYER}
    space = SearchSpace(plain, "name", tables)
    first = _plain(plain, space, space.config(0), *digits)  # bruteforce's first candidate
    with pytest.raises(SearchFailed) as failed:
        _search(plain, digits, tmp_path)
    message = str(failed.value)
    assert "by the fast engine" in message and f"{first['accuracy']!r} by the plain path" in message
    audit = _summary(tmp_path)["audit"]
    assert (audit["rederived"], audit["matched"]) == (1, 0)


def test_the_engine_and_the_float_parameters_are_said_in_the_log(digits, caplog):
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(200, 5, 4)
    y = model(x).argmax(dim=1).detach()
    space = {"seed": {"default": {"config": {"name": ["NA"]}},
                      "enc.linear1": {"config": {"name": ["integer"], "weight_width": [1, 8]}}}}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="bitscout"):
        bitscout.search(model, (x, y), space, strategy="bruteforce")
        bitscout.search(_trained(NanAtTwoBits, *digits), digits, SPACE, strategy="bruteforce")
    lines = [r.getMessage() for r in caplog.records]
    assert any("stay float" in m and "enc.self_attn.in_proj_weight" in m for m in lines)
    assert any("fast engine off" in m and "NanAtTwoBits.forward" in m for m in lines)


def test_audit_rate_is_checked_alike_from_both_doors(plain, digits):
    for bad in (-0.1, 1.5, "often", True):
        with pytest.raises(ConfigError, match=r"audit_rate: must be a number in 0\.\.1"):
            _search(plain, digits, None, audit_rate=bad)
        with pytest.raises(ConfigError, match=r"setup\.audit_rate: must be a number in 0\.\.1"):
            _settings({"audit_rate": bad})
    assert _settings({"audit_rate": 0.5}).audit_rate == 0.5
    assert _settings({}).audit_rate == 1 / 50


def _settings(setup: dict) -> StrategySettings:
    metrics = {"accuracy": {"scale": 1.0}}
    return parse_settings({"strategy": {"setup": setup, "metrics": metrics}}, 0)
