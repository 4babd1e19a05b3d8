"""`run_compare` on the 48-candidate seed space of examples/jsc_tiny_lab3.toml, offline on the
`fake` dataset; one float checkpoint and one full comparison are shared by the module."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import tomllib
from pathlib import Path

import matplotlib.image
import pytest
import tomli_w
from rich.console import Console

from bitscout.analysis import compare
from bitscout.analysis.compare import COLUMNS, CompareResult
from bitscout.cli.build import load_data, train_to
from bitscout.cli.compare import run_compare
from bitscout.cli.config import load_config
from bitscout.errors import ConfigError
from bitscout.results import compare_out

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jsc_tiny_lab3.toml"
STRATEGIES = ["bruteforce", "tpe", "random"]
REPEATS = 3
SIZE = 48
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def base_doc() -> dict:
    doc = tomllib.loads(EXAMPLE.read_text())
    doc.pop("dataset_path", None)
    doc.update(
        dataset="fake",
        max_epochs=2,
        dataset_options={"num_samples": 2000, "num_features": 16, "num_classes": 5},
    )
    return doc


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(tomli_w.dumps(doc))
    return path


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def of(rows: list[dict], strategy: str, seed: int | None = None) -> list[dict]:
    return [r for r in rows if r["strategy"] == strategy and seed in (None, r["seed"])]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare")


@pytest.fixture(scope="module")
def config_path(workdir) -> Path:
    return write_config(workdir / "lab3.toml", base_doc())


@pytest.fixture(scope="module")
def ckpt(workdir, config_path) -> Path:
    cfg = load_config(config_path)
    train_to(cfg, load_data(cfg), workdir / "train", quiet())
    return workdir / "train" / "model.pt"


@pytest.fixture(scope="module")
def result(workdir, config_path, ckpt) -> CompareResult:
    cfg = load_config(config_path)
    return run_compare(
        cfg, STRATEGIES, REPEATS, workdir / "out", quiet(), trials=SIZE, load=str(ckpt)
    )


# --- the full comparison ------------------------------------------------------------------


def test_csv_has_exactly_the_columns_and_one_row_per_trial(result, workdir):
    columns, rows = read_csv(workdir / "out" / "compare.csv")
    assert columns == list(COLUMNS)
    assert len(rows) == len(result.rows)
    for name in STRATEGIES:
        assert {r["seed"] for r in of(rows, name)} == {"0", "1", "2"}
    assert len(of(rows, "bruteforce")) == REPEATS * SIZE
    for seed in range(REPEATS):
        for name in STRATEGIES:
            run = of(result.rows, name, seed)
            assert [r["trial"] for r in run] == list(range(1, SIZE + 1))


def test_bruteforce_reaches_the_optimum_by_its_last_trial(result):
    for seed in range(REPEATS):
        run = of(result.rows, "bruteforce", seed)
        assert run[-1]["regret"] == 0.0
        assert run[-1]["best_so_far"] == result.optimum
        # our brute force walks the space in index order, whatever the seed
        assert len({r["config"] for r in run}) == SIZE


def test_optimum_is_the_best_brute_force_objective(result):
    objectives = [r["objective"] for r in of(result.rows, "bruteforce", 0)]
    assert result.optimum == max(objectives)  # the example maximizes, with no constraints
    assert all(r["objective"] <= result.optimum for r in result.rows)


def test_regret_is_never_negative_and_best_so_far_is_monotone(result):
    for r in result.rows:
        assert r["regret"] is not None and r["regret"] >= 0
        assert math.isclose(r["regret"], result.optimum - r["best_so_far"], abs_tol=1e-12)
    for name in STRATEGIES:
        for seed in range(REPEATS):
            best = [r["best_so_far"] for r in of(result.rows, name, seed)]
            assert best == sorted(best)
            objectives = [r["objective"] for r in of(result.rows, name, seed)]
            assert best[-1] == max(objectives)


def test_each_distinct_config_is_evaluated_at_most_once(result):
    assert result.evaluated <= SIZE
    configs = {r["config"] for r in result.rows}
    assert len(configs) <= result.evaluated  # every config seen went through the cache


def test_shared_cache_counts_candidates(workdir, config_path, ckpt, monkeypatch):
    """Spy on the evaluator: the whole comparison evaluates each candidate once at most."""
    built = []
    real = compare.make_evaluator

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(compare, "make_evaluator", spy)
    cfg = load_config(config_path)
    got = run_compare(cfg, ["random", "grid"], 2, workdir / "spy", quiet(), trials=SIZE, load=ckpt)
    assert len(built) == 1
    assert got.evaluated == len(built[0].cache) <= SIZE
    # grid exhausts the space: one visit per candidate
    assert len({r["config"] for r in of(got.rows, "grid", 0)}) == SIZE


def test_summary_per_strategy(result):
    assert [s["strategy"] for s in result.summary] == STRATEGIES
    brute = result.summary[0]
    assert brute["seeds"] == REPEATS and brute["trials"] == [SIZE] * REPEATS
    assert brute["final_best"] == result.optimum
    assert brute["never_optimum"] == 0 and brute["never_within"] == 0
    assert brute["reached_optimum"] == brute["reached_within"] == 1.0
    first = next(r["trial"] for r in of(result.rows, "bruteforce", 0) if r["regret"] == 0)
    assert brute["trials_to_optimum"] == first
    assert brute["trials_to_within"] <= first
    auc = sum(r["regret"] for r in of(result.rows, "bruteforce", 0))
    assert math.isclose(brute["regret_auc"], auc)
    for entry in result.summary:
        assert len(entry["best_so_far"]["mean"]) == SIZE
        assert all(
            lo <= hi + 1e-12
            for lo, hi in zip(entry["regret"]["q25"], entry["regret"]["q75"], strict=True)
        )


def test_markdown_names_every_strategy(result, workdir):
    text = (workdir / "out" / "compare.md").read_text()
    for name in STRATEGIES:
        assert f"| {name} |" in text
    assert f"space of {SIZE} candidates" in text
    assert f"{result.evaluated} distinct configs evaluated" in text
    assert "trials to optimum (KM median; reached)" in text


def test_plot_is_a_valid_png(result, workdir):
    path = workdir / "out" / "plots" / "compare.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_plot_names_each_band_and_keeps_them_apart(result, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))
    )
    compare_out.draw(tmp_path / "c.png", result.summary, result.optimum, "t")
    (ax,) = drawn[0].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for entry in result.summary:
        assert f"{entry['strategy']}: interquartile range" in labels
    hatches = [c.get_hatch() for c in ax.collections]
    assert len(hatches) == len(result.summary) == len(set(hatches))  # one pattern per band


def test_same_seeds_give_the_same_rows(result, workdir, config_path, ckpt):
    """Another order of strategies, another cache history: the same rows for tpe and random."""
    cfg = load_config(config_path)
    again = run_compare(
        cfg, ["tpe", "random"], REPEATS, workdir / "again", quiet(), trials=SIZE, load=ckpt
    )
    for name in ("tpe", "random"):
        assert of(again.rows, name) == of(result.rows, name)
    _, first = read_csv(workdir / "out" / "compare.csv")
    _, second = read_csv(workdir / "again" / "compare.csv")
    assert of(second, "tpe") == of(first, "tpe")
    # seeds do matter: tpe seed 0 and seed 1 propose differently
    configs = [[r["config"] for r in of(result.rows, "tpe", s)] for s in (0, 1)]
    assert configs[0] != configs[1]
    assert all(isinstance(json.loads(c), dict) for c in configs[0])


# --- spaces too large to enumerate --------------------------------------------------------


def test_too_large_space_compares_without_regret(workdir, config_path, ckpt, monkeypatch):
    monkeypatch.setattr(compare, "ENUMERABLE_MAX", 10)
    console = quiet()
    cfg = load_config(config_path)
    got = run_compare(cfg, ["random", "tpe"], 2, workdir / "large", console, trials=6, load=ckpt)
    assert "too large to enumerate" in console.file.getvalue()
    assert got.optimum is None
    assert got.evaluated <= 2 * 2 * 6  # nothing was enumerated
    assert all(r["regret"] is None and r["best_so_far"] is not None for r in got.rows)
    _, rows = read_csv(workdir / "large" / "compare.csv")
    assert len(rows) == 2 * 2 * 6
    assert all(r["regret"] == "" for r in rows)
    assert all(e["regret_auc"] is None and e["regret"] is None for e in got.summary)
    text = (workdir / "large" / "compare.md").read_text()
    assert "optimum unknown" in text and "| random |" in text
    assert (workdir / "large" / "plots" / "compare.png").read_bytes()[:8] == PNG_SIGNATURE


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"strategies": ["bruteforce", "annealing"]}, "--strategies"),
        ({"strategies": []}, "--strategies"),
        ({"strategies": ["tpe", "tpe"]}, "--strategies"),
        ({"repeats": 0}, "--repeats"),
        ({"trials": 0}, "--trials"),
    ],
)
def test_bad_arguments_are_config_errors(workdir, config_path, kwargs, key):
    args = {"strategies": ["tpe"], "repeats": 1, "trials": None} | kwargs
    out = workdir / f"bad-{key.strip('-')}"
    with pytest.raises(ConfigError) as err:
        run_compare(load_config(config_path), args["strategies"], args["repeats"], out, quiet(),
                    trials=args["trials"])  # fmt: skip
    assert err.value.key == key
    assert not out.exists()  # refused before anything was written


def test_unknown_strategy_lists_the_known_ones(config_path, tmp_path):
    with pytest.raises(
        ConfigError, match="known: bruteforce, bruteforce-reversed, shuffled, greedy"
    ):
        run_compare(load_config(config_path), "bruteforce,sa", 1, tmp_path / "x", quiet())


def test_multi_objective_is_refused(workdir, tmp_path):
    doc = copy.deepcopy(base_doc())
    doc["search"]["strategy"]["setup"]["sum_scaled_metrics"] = False
    cfg = load_config(write_config(tmp_path / "multi.toml", doc))
    with pytest.raises(ConfigError) as err:
        run_compare(cfg, ["tpe"], 1, tmp_path / "out", quiet())
    assert err.value.key == "search.strategy.setup.sum_scaled_metrics"
