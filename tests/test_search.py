"""End-to-end tests of `bitscout search` on the 48-candidate seed space: brute force against
an exhaustive reference, summary.json and best.toml, stopping and resuming, and the
evaluator's isolation from the model it quantizes.

Everything runs offline on the `fake` dataset shaped like the jet data (16 features, 5
classes), so the seed's jsc-tiny fits; one float checkpoint is trained per module
(tests/search_support.py).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch
from search_support import (  # noqa: F401 - the fixtures
    ALL_CONFIGS,
    DIMS,
    EXAMPLE,
    SEED,
    Tiny,
    accuracy,
    base_doc,
    ckpt,
    config_of,
    data,
    float_model,
    plan_for,
    read_summary,
    read_trials,
    reference,
    search,
    workdir,
)
from torch import nn

from bitscout import quantize_model
from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant.space import parse_space


@pytest.fixture(scope="module")
def brute(ckpt, workdir) -> Path:  # noqa: F811
    doc = base_doc()
    doc["search"]["strategy"]["name"] = "bruteforce"
    return search(ckpt, workdir, doc, out="brute")


# --- brute force --------------------------------------------------------------------------


def test_bruteforce_evaluates_each_candidate_once(brute):
    rows = read_trials(brute)
    assert len(rows) == 48
    assert [config_of(r) for r in rows] == ALL_CONFIGS  # in index order
    assert len({config_of(r) for r in rows}) == 48
    assert all(r["cached"] == "False" for r in rows)
    assert all(r["state"] == "complete" for r in rows)


def test_bruteforce_best_matches_exhaustive_reference(brute, reference, float_model, data):  # noqa: F811
    rows = read_trials(brute)
    for r in rows:  # every candidate's metrics agree with the independent evaluation
        ref = reference[config_of(r)]
        assert float(r["accuracy"]) == pytest.approx(ref["accuracy"], abs=1e-12)
        assert float(r["average_bitwidth"]) == ref["average_bitwidth"]
        assert float(r["objective"]) == pytest.approx(ref["score"], abs=1e-9)
    top = max(v["score"] for v in reference.values())
    best_set = {c for c, v in reference.items() if v["score"] >= top - 1e-9}
    summary = read_summary(brute)
    best = summary["best"]
    best_config = tuple(best["config"][d] for d in DIMS)
    assert best_config in best_set
    assert best["objective"][0] == pytest.approx(top, abs=1e-9)
    assert best["metrics"]["accuracy"] == pytest.approx(reference[best_config]["accuracy"])

    doc = tomllib.loads((brute / "best.toml").read_text())
    assert doc["trial"] == best["number"]
    table = doc["passes"]["quantize"]
    assert table["by"] == "name"
    assert table["default"]["config"]["name"] == "NA"
    layer = table["seq_blocks_2"]["config"]
    assert layer["name"] == "integer"
    d, w, b = best_config
    assert (layer["data_in_width"], layer["weight_width"], layer["bias_width"]) == (d, w, b)
    assert (layer["data_in_frac_width"], layer["weight_frac_width"], layer["bias_frac_width"]) == (
        d // 2,
        w // 2,
        b // 2,
    )
    assert set(table) == {"by", "default", "seq_blocks_2"}
    # best.toml, applied as a plan, reproduces the best candidate's accuracy.
    candidate = quantize_model(float_model, table)
    assert accuracy(candidate, data.x_val, data.y_val) == reference[best_config]["accuracy"]


def test_summary_schema(brute):
    summary = read_summary(brute)
    for key in (
        "schema_version",
        "strategy",
        "sampler",
        "seed",
        "space_size",
        "trials_run",
        "unique_configs",
        "best",
        "wall_s",
    ):
        assert key in summary
    assert summary["schema_version"] == 3
    assert summary["strategy"] == "bruteforce"
    assert summary["sampler"] is None
    assert summary["seed"] == SEED
    assert summary["space_size"] == 48
    assert summary["trials_run"] == 48
    assert summary["unique_configs"] == 48
    assert summary["infeasible"] == 0
    assert summary["feasible"] + summary["infeasible"] == summary["complete"] == 48
    assert summary["model_source"]["path"].endswith("model.pt")
    assert summary["metric_units"]["accuracy"] == "fraction"
    assert set(summary["float"]["validation"]) >= {"accuracy", "loss", "average_bitwidth"}
    assert summary["float"]["validation"]["average_bitwidth"] == 32.0
    assert summary["test"]["candidates"][0]["number"] == summary["best"]["number"]
    best = summary["best"]
    assert set(best) >= {"number", "config", "metrics", "objective", "proposals"}
    assert isinstance(best["number"], int)
    assert set(best["config"]) == set(DIMS)
    assert all(type(v) is int for v in best["config"].values())
    metrics = best["metrics"]
    assert metrics["average_bitwidth"] == best["config"]["seq_blocks_2/weight_width"]
    assert best["objective"] == pytest.approx(
        [2 * metrics["accuracy"] - 0.1 * metrics["average_bitwidth"]]
    )
    assert isinstance(summary["wall_s"], float)
    assert summary["wall_s"] >= 0


def test_float_baseline_and_test_split_are_measured_on_their_own_rows(brute, float_model, data):  # noqa: F811
    summary = read_summary(brute)
    baseline = summary["float"]
    assert baseline["validation"]["accuracy"] == accuracy(float_model, data.x_val, data.y_val)
    assert baseline["test"]["accuracy"] == accuracy(float_model, data.x_test, data.y_test)
    assert summary["test"]["rows"] == len(data.y_test)
    first = summary["test"]["candidates"][0]
    config = tuple(summary["best"]["config"][d] for d in DIMS)
    winner = quantize_model(float_model, plan_for(*config))
    assert first["metrics"]["accuracy"] == accuracy(winner, data.x_test, data.y_test)
    numbers = [c["number"] for c in summary["test"]["candidates"]]
    assert len(numbers) == len(set(numbers)) == 10  # the ten distinct winners, once each


def test_stop_after_20_then_resume(ckpt, workdir):  # noqa: F811
    doc = base_doc()
    doc["search"]["strategy"]["name"] = "bruteforce"
    out = search(ckpt, workdir, doc, "--trials", "20", out="resume")
    rows = read_trials(out)
    assert len(rows) == 20
    assert [config_of(r) for r in rows] == ALL_CONFIGS[:20]
    assert read_summary(out)["trials_run"] == 20

    assert doc["search"]["strategy"]["setup"]["n_trials"] == 48
    out = search(ckpt, workdir, doc, out="resume")
    rows = read_trials(out)
    assert len(rows) == 48
    configs = [config_of(r) for r in rows]
    assert len(set(configs)) == 48
    assert sorted(configs) == sorted(ALL_CONFIGS)
    assert all(r["cached"] == "False" for r in rows)
    summary = read_summary(out)
    assert summary["trials_run"] == 28
    assert summary["unique_configs"] == 48


# --- the evaluator ------------------------------------------------------------------------


def test_evaluator_state_isolation(ckpt, data, reference):  # noqa: F811
    table = tomllib.loads(EXAMPLE.read_text())["search"]["search_space"]
    model = Tiny()
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    space = parse_space(table, model)
    metrics = ["accuracy", "loss", "average_bitwidth", "bops", "model_size_bits"]
    a = dict(zip(DIMS, (4, 2, 2), strict=True))
    b = dict(zip(DIMS, (16, 16, 16), strict=True))

    evaluator = Evaluator(model, space, (data.x_val, data.y_val), metrics)
    first, cached = evaluator.evaluate(a)
    assert not cached
    evaluator.cache.clear()
    other, cached = evaluator.evaluate(b)
    assert not cached
    evaluator.cache.clear()
    again, cached = evaluator.evaluate(a)
    assert not cached
    assert again == first
    fresh, cached = Evaluator(model, space, (data.x_val, data.y_val), metrics).evaluate(a)
    assert not cached
    assert fresh == first
    assert other != first

    # The cache hands out copies: changing a result does not change what is cached.
    hit, cached = evaluator.evaluate(a)
    assert cached
    assert hit == first
    hit["accuracy"] = -1.0
    assert evaluator.evaluate(a)[0] == first

    assert first["accuracy"] == reference[(4, 2, 2)]["accuracy"]
    assert other["accuracy"] == reference[(16, 16, 16)]["accuracy"]
    assert first["average_bitwidth"] == 2.0
    assert other["average_bitwidth"] == 16.0
    # bops: 16 * 5 MACs at weight bits * input bits.
    assert first["bops"] == 80 * 2 * 4
    assert other["bops"] == 80 * 16 * 16

    after = model.state_dict()
    assert list(after) == list(before)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype
        assert torch.equal(after[name], tensor), name
    saved = torch.load(ckpt, weights_only=True)
    for name, tensor in saved.items():
        assert torch.equal(after[name], tensor), name
    assert all(
        type(m) in (nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.Sequential, Tiny)
        for m in model.modules()
    )
    assert math.isfinite(first["loss"])


@pytest.mark.parametrize("shared", [True, False])
def test_latency_shared_reaches_the_evaluator(float_model, data, shared):  # noqa: F811
    from bitscout.data.containers import prepare
    from bitscout.study.run import Job, make_evaluator
    from bitscout.study.settings import parse_settings

    doc = base_doc()
    doc["search"]["strategy"]["setup"]["latency_shared"] = shared
    settings = parse_settings(doc["search"], 0)
    space = parse_space(doc["search"]["search_space"], float_model)
    job = Job(float_model, prepare((data.x_val, data.y_val)), space, settings)
    evaluator = make_evaluator(job)
    assert evaluator.share_latency is shared
