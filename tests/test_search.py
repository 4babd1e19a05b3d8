"""End-to-end tests of `bitscout search` (and `bitscout space`) on the 48-candidate seed space.

Everything runs offline on the `fake` dataset shaped like the jet data (16 features, 5
classes), so the seed's jsc-tiny fits; one float checkpoint is trained per module.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from bitscout import quantize_model
from bitscout.cli import main
from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant.space import parse_space
from bitscout.zoo.data import load_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jsc_tiny_lab3.toml"
SEED = 42
DATASET_OPTIONS = {"num_samples": 2000, "num_features": 16, "num_classes": 5}
DIMS = ("seq_blocks_2/data_in_width", "seq_blocks_2/weight_width", "seq_blocks_2/bias_width")
CHOICES = ([4, 8, 16], [2, 4, 8, 16], [2, 4, 8, 16])
ALL_CONFIGS = list(itertools.product(*CHOICES))  # mixed radix, last dimension fastest


# --- helpers ------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(doc: dict, prefix: str = "") -> str:
    """A small TOML writer: scalars first, then one [header] per sub-table."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            text += f"\n[{name}]\n" + to_toml(v, name)
    return text


def base_doc() -> dict:
    """The seed experiment (examples/jsc_tiny_lab3.toml) on the fake dataset, trained briefly."""
    example = tomllib.loads(EXAMPLE.read_text())
    return {
        "model": "jsc-tiny",
        "dataset": "fake",
        "max_epochs": 2,
        "batch_size": 64,
        "learning_rate": 1e-2,
        "seed": SEED,
        "dataset_options": dict(DATASET_OPTIONS),
        "search": copy.deepcopy(example["search"]),
    }


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(to_toml(doc))
    assert tomllib.loads(path.read_text()) == doc  # the writer round-trips
    return path


def search(ckpt: Path, workdir: Path, doc: dict, *args: str, out: str = "out") -> Path:
    cfg = write_config(workdir / f"{out}.toml", doc)
    out_dir = workdir / out
    rc = main(["search", str(cfg), "--out", str(out_dir), "--load", str(ckpt), *args])
    assert rc == 0
    return out_dir


def read_trials(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # rows come in the order trials finished; every trial of the store has one
    assert sorted(int(r["number"]) for r in rows) == list(range(len(rows)))
    return rows


def config_of(row: dict[str, str]) -> tuple[int, ...]:
    return tuple(int(row[d]) for d in DIMS)


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


class Tiny(nn.Module):
    """jsc-tiny written out here: BatchNorm1d(16), ReLU, Linear(16, 5), ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.seq_blocks = nn.Sequential(nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5), nn.ReLU())

    def forward(self, x):
        return self.seq_blocks(x)


def plan_for(d: int, w: int, b: int) -> dict:
    """A by-name `[passes.quantize]` table quantizing only seq_blocks_2."""
    return {
        "by": "name",
        "default": {"config": {"name": "NA"}},
        "seq_blocks_2": {
            "config": {
                "name": "integer",
                "data_in_width": d,
                "data_in_frac_width": "NA",
                "weight_width": w,
                "weight_frac_width": "NA",
                "bias_width": b,
                "bias_frac_width": "NA",
            }
        },
    }


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        correct = int((model(x).argmax(dim=1) == y).sum())
    return correct / len(y)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("search")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    cfg = write_config(workdir / "train.toml", base_doc())
    assert main(["train", str(cfg), "--out", str(workdir / "train")]) == 0
    path = workdir / "train" / "model.pt"
    assert path.exists()
    return path


@pytest.fixture(scope="module")
def float_model(ckpt) -> nn.Module:
    model = Tiny()
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def data():
    return load_dataset("fake", seed=SEED, **DATASET_OPTIONS)


@pytest.fixture(scope="module")
def reference(float_model, data) -> dict[tuple[int, int, int], dict[str, float]]:
    """Independent exhaustive evaluation of the 48 candidates on the validation split."""
    out = {}
    for d, w, b in ALL_CONFIGS:
        candidate = quantize_model(float_model, plan_for(d, w, b))
        acc = accuracy(candidate, data.x_val, data.y_val)
        avg = float(w)  # only seq_blocks_2 is quantized: the mean weight width is its width
        out[(d, w, b)] = {"accuracy": acc, "average_bitwidth": avg, "score": 2 * acc - 0.1 * avg}
    return out


@pytest.fixture(scope="module")
def brute(ckpt, workdir) -> Path:
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


def test_bruteforce_best_matches_exhaustive_reference(brute, reference, float_model, data):
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


def test_float_baseline_and_test_split_are_measured_on_their_own_rows(brute, float_model, data):
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


def test_stop_after_20_then_resume(ckpt, workdir):
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


# --- Optuna -------------------------------------------------------------------------------


def test_tpe_is_reproducible_by_seed(ckpt, workdir):
    doc = base_doc()

    def sequence(seed: str, out: str) -> list[tuple[int, ...]]:
        path = search(
            ckpt, workdir, doc, "--sampler", "tpe", "--seed", seed, "--trials", "15", out=out
        )
        summary = read_summary(path)
        assert (summary["strategy"], summary["sampler"]) == ("optuna", "tpe")
        assert summary["seed"] == int(seed)
        assert summary["trials_run"] == 15
        rows = read_trials(path)
        assert len(rows) == 15
        return [config_of(r) for r in rows]

    first = sequence("3", "tpe3a")
    assert sequence("3", "tpe3b") == first
    assert sequence("4", "tpe4") != first


def test_repeated_proposals_are_cached(ckpt, workdir, reference):
    out = search(
        ckpt, workdir, base_doc(), "--sampler", "tpe", "--trials", "60", "--seed", "0", out="cached"
    )
    rows = read_trials(out)
    assert len(rows) == 60
    summary = read_summary(out)
    configs = [config_of(r) for r in rows]
    assert summary["unique_configs"] <= 48
    assert summary["unique_configs"] == len(set(configs))
    assert summary["trials_run"] == 60
    metric_columns = [
        "accuracy",
        "loss",
        "average_bitwidth",
        "model_size_bits",
        "bops",
        "objective",
    ]
    first: dict[tuple[int, ...], dict[str, str]] = {}
    cached = 0
    for row, config in zip(rows, configs, strict=True):
        if config not in first:
            assert row["cached"] == "False"
            first[config] = row
            assert float(row["accuracy"]) == pytest.approx(reference[config]["accuracy"])
            continue
        assert row["cached"] == "True"
        cached += 1
        for col in metric_columns:
            assert row[col] == first[config][col]
    assert cached == 60 - len(first) >= 12  # 60 proposals, at most 48 distinct candidates


def ref_non_dominated(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trial numbers not dominated under (accuracy maximized, average_bitwidth minimized)."""

    def dom(a, b) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    return {i for i, p in points.items() if not any(dom(q, p) for q in points.values())}


@pytest.mark.parametrize("sampler", ["random", "nsgaii"])
def test_multi_objective_pareto_csv(ckpt, workdir, sampler):
    doc = base_doc()
    strategy = doc["search"]["strategy"]
    strategy["setup"]["sum_scaled_metrics"] = False
    strategy["metrics"] = {
        "accuracy": {"direction": "maximize"},
        "average_bitwidth": {"direction": "minimize"},
    }
    out = search(
        ckpt,
        workdir,
        doc,
        "--sampler",
        sampler,
        "--trials",
        "30",
        "--seed",
        "1",
        out=f"pareto_{sampler}",
    )
    rows = read_trials(out)
    assert len(rows) == 30
    complete = [r for r in rows if r["state"] == "complete"]
    assert len(complete) == 30
    for r in complete:  # the objectives are the raw metrics
        assert r["objective_accuracy"] == r["accuracy"]
        assert r["objective_average_bitwidth"] == r["average_bitwidth"]
    points = {
        int(r["number"]): (float(r["accuracy"]), float(r["average_bitwidth"])) for r in complete
    }
    expected = ref_non_dominated(points)
    by_number = {int(r["number"]): r for r in complete}

    with (out / "pareto.csv").open(newline="") as f:
        front = list(csv.DictReader(f))
    assert front
    # one row per distinct config on the front: its first trial, and how many proposed it
    assert {config_of(r) for r in front} == {config_of(by_number[i]) for i in expected}
    assert len({config_of(r) for r in front}) == len(front)
    order = [int(r["number"]) for r in complete]  # trials.csv is in the order they finished
    for r in front:
        same = [n for n in order if config_of(by_number[n]) == config_of(r)]
        assert int(r["number"]) == same[0] and int(r["proposals"]) == len(same)
        trial = by_number[int(r["number"])]
        assert float(r["accuracy"]) == float(trial["accuracy"])
        assert float(r["average_bitwidth"]) == float(trial["average_bitwidth"])
    summary = read_summary(out)
    assert summary["pareto_size"] == len(front)
    assert summary["sampler"] == sampler


# --- constraints --------------------------------------------------------------------------


def _check_constrained(rows, summary, feasible) -> None:
    assert rows
    infeasible = [r for r in rows if r["state"] == "infeasible"]
    for r in rows:
        assert r["state"] == ("complete" if feasible(r) else "infeasible")
    assert summary["infeasible"] == len(infeasible)
    best = summary["best"]
    assert best is not None
    best_row = rows[best["number"]]
    assert best_row["state"] == "complete"
    assert feasible(best_row)
    top = max(float(r["objective"]) for r in rows if r["state"] == "complete")
    assert best["objective"][0] == top


def test_constraint_on_bitwidth_excludes_the_unconstrained_best(ckpt, workdir, reference):
    # The unconstrained best has weight width 2 (see the reference); forbid it.
    unconstrained = max(reference, key=lambda c: reference[c]["score"])
    assert unconstrained[1] == 2
    doc = base_doc()
    doc["search"]["strategy"]["name"] = "bruteforce"
    doc["search"]["strategy"]["constraints"] = {"average_bitwidth": ">= 4"}
    out = search(ckpt, workdir, doc, out="constrained_bits")
    rows = read_trials(out)
    assert len(rows) == 48
    summary = read_summary(out)
    _check_constrained(rows, summary, lambda r: int(r["seq_blocks_2/weight_width"]) >= 4)
    assert summary["infeasible"] == 12
    feasible_ref = {c: v for c, v in reference.items() if c[1] >= 4}
    top = max(v["score"] for v in feasible_ref.values())
    best_config = tuple(summary["best"]["config"][d] for d in DIMS)
    assert feasible_ref[best_config]["score"] == pytest.approx(top, abs=1e-9)
    best_toml = tomllib.loads((out / "best.toml").read_text())
    assert best_toml["passes"]["quantize"]["seq_blocks_2"]["config"]["weight_width"] >= 4


@pytest.mark.parametrize(
    "args", [("--strategy", "bruteforce"), ("--sampler", "tpe", "--trials", "20")]
)
def test_accuracy_constraint_marks_infeasible_rows(ckpt, workdir, reference, args):
    accs = sorted(v["accuracy"] for v in reference.values())
    bound = accs[len(accs) // 2]  # the median: about half the candidates are infeasible
    assert accs[0] < bound <= accs[-1]
    doc = base_doc()
    doc["search"]["strategy"]["constraints"] = {"accuracy": f">= {bound!r}"}
    out = search(ckpt, workdir, doc, *args, out=f"constrained_acc_{args[1]}")
    rows = read_trials(out)
    _check_constrained(rows, read_summary(out), lambda r: float(r["accuracy"]) >= bound)
    if args[1] == "bruteforce":
        assert sum(r["state"] == "infeasible" for r in rows) == sum(a < bound for a in accs)


# --- the evaluator ------------------------------------------------------------------------


def test_evaluator_state_isolation(ckpt, data, reference):
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
def test_latency_shared_reaches_the_evaluator(float_model, data, shared):
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
