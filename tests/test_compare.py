"""`run_compare` on the 48-candidate seed space of examples/jsc_tiny_lab3.toml, offline on the
`fake` dataset; one float checkpoint and one full comparison are shared by the module."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import shlex
import statistics
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import tomli_w
import torch
from rich.console import Console

from bitscout.analysis import compare
from bitscout.analysis.compare import COLUMNS, KNOWN, CompareResult
from bitscout.cli import main
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
    assert "trials to optimum (KM median; seeds reached)" in text


def test_plot_is_a_valid_png(result, workdir):
    path = workdir / "out" / "plots" / "compare.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def _drawn_axes(result, tmp_path, monkeypatch):
    """The one axes of compare.png as drawn (caught at savefig)."""
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))
    )
    compare_out.draw(tmp_path / "c.png", result.summary, result.optimum, "t")
    (ax,) = drawn[0].axes
    return ax


def test_plot_names_each_band_and_keeps_them_apart(result, tmp_path, monkeypatch):
    ax = _drawn_axes(result, tmp_path, monkeypatch)
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


# --- statistics, test split, provenance (issue 20, item 17) ----------------------------------


def test_table_and_console_show_the_censored_trials_to_the_optimum(result, workdir):
    text = (workdir / "out" / "compare.md").read_text()
    for entry in result.summary:
        seeds = entry["seeds"]
        reached = seeds - entry["never_optimum"]
        median = entry["trials_to_optimum"]
        shown = f"> {SIZE}" if median is None else f"{median:.6g}"
        assert f"| {shown}; {reached}/{seeds} |" in text
        assert entry["reached_optimum"] == reached / seeds


def test_each_final_pick_is_scored_once_on_the_test_split(result, workdir):
    assert len(result.picks) == len(STRATEGIES) * REPEATS
    for pick in result.picks:
        run = of(result.rows, pick["strategy"], pick["seed"])
        assert pick["validation"] == run[-1]["best_so_far"]
        row = run[pick["trial"] - 1]  # the first trial that reached the run's best
        assert row["objective"] == pick["validation"]
        assert json.loads(row["config"]) == pick["config"]
        assert isinstance(pick["test"], float)
    for entry in result.summary:
        tests = [p["test"] for p in result.picks if p["strategy"] == entry["strategy"]]
        assert entry["final_test"] == statistics.median(tests)
    # brute force picks the same config in every seed: the same test score
    assert len({p["test"] for p in result.picks if p["strategy"] == "bruteforce"}) == 1
    text = (workdir / "out" / "compare.md").read_text()
    assert "| median final best (validation) | its test score (median) |" in text


def _weights_sha256(ckpt: Path) -> str:
    digest = hashlib.sha256()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_provenance_records_the_command_options_code_and_model(result, workdir, ckpt,
                                                               config_path):  # fmt: skip
    doc = json.loads((workdir / "out" / "compare.json").read_text())
    p = doc["provenance"]
    assert p == result.provenance
    assert p["bitscout_version"] == metadata.version("bitscout")
    root = Path(__file__).resolve().parents[1]
    commit = p["git_commit"]
    assert len(commit) == 40 and isinstance(p["git_dirty"], bool)
    # other work may have been committed since: the recorded commit is HEAD or before it
    ancestor = ["git", "-C", str(root), "merge-base", "--is-ancestor", commit, "HEAD"]
    assert subprocess.run(ancestor, check=False).returncode == 0
    assert p["model"]["checkpoint"] == str(ckpt)
    assert p["model"]["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert p["model"]["weights_sha256"] == _weights_sha256(ckpt)
    assert p["data"]["rows"] == 400 and p["test_data"]["rows"] == 400
    options = p["options"]
    assert options["config_sha256"] == hashlib.sha256(config_path.read_bytes()).hexdigest()
    assert options["strategies"] == STRATEGIES and options["repeats"] == REPEATS
    assert options["trials"] == options["trials_per_run"] == SIZE
    assert options["within"] == 1.0 and options["budgets"] == [50, 100, 200, 500, 1000]
    argv = shlex.split(p["command"])
    assert argv[:3] == ["bitscout", "compare", str(config_path)]
    for flag, value in (("--strategies", ",".join(STRATEGIES)), ("--repeats", "3"),
                        ("--trials", "48"), ("--within", "1"),
                        ("--budgets", "50,100,200,500,1000"), ("--load", str(ckpt))):  # fmt: skip
        assert argv[argv.index(flag) + 1] == value
    text = (workdir / "out" / "compare.md").read_text()
    assert "## Provenance" in text and f"`{p['command']}`" in text
    assert p["model"]["checkpoint_sha256"] in text and commit in text
    assert doc["optimum"] == result.optimum and len(doc["picks"]) == len(result.picks)


def test_the_recorded_command_re_derives_the_table(workdir, config_path, ckpt):
    """The command compare.json records, run again elsewhere, gives the same rows and table;
    --within and --budgets reach the outputs."""
    argv = ["compare", str(config_path), "--strategies", "random,shuffled", "--repeats", "2",
            "--trials", "12", "--within", "5", "--budgets", "5,10", "--load", str(ckpt)]  # fmt: skip
    assert main([*argv, "--out", str(workdir / "first")]) == 0
    first = json.loads((workdir / "first" / "compare.json").read_text())
    assert first["provenance"]["options"]["within"] == 5.0
    assert first["provenance"]["options"]["budgets"] == [5, 10]
    again = shlex.split(first["provenance"]["command"])[1:]
    again[again.index("--out") + 1] = str(workdir / "second")
    assert main(again) == 0
    csvs = [(workdir / d / "compare.csv").read_text() for d in ("first", "second")]
    assert csvs[0] == csvs[1]
    tables = [(workdir / d / "compare.md").read_text().split("## Provenance")[0]
              for d in ("first", "second")]  # fmt: skip
    assert tables[0] == tables[1]
    assert "trials to within 5% (KM median; seeds reached)" in tables[0]
    assert "| strategy | best at 5 trials (median) | best at 10 trials (median) |" in tables[0]


def test_help_lists_every_strategy_label(capsys):
    with pytest.raises(SystemExit) as done:
        main(["compare", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for label in KNOWN:
        assert f" {label}," in text or f" {label} (" in text


@pytest.mark.parametrize(("flag", "value"), [("--within", "0"), ("--within", "nan"),
                                             ("--budgets", "100,50"), ("--budgets", "x")])  # fmt: skip
def test_bad_threshold_or_budgets_are_one_line_before_any_work(config_path, tmp_path, capsys,
                                                               flag, value):  # fmt: skip
    out = tmp_path / "out"
    assert main(["compare", str(config_path), flag, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err
    assert not out.exists()


def test_plot_draws_median_regret_on_a_log_axis(result, tmp_path, monkeypatch):
    ax = _drawn_axes(result, tmp_path, monkeypatch)
    assert ax.get_yscale() == "symlog"
    assert "regret" in ax.get_ylabel()
    for line, entry in zip(ax.get_lines(), result.summary, strict=True):
        np.testing.assert_array_equal(line.get_ydata(), entry["regret"]["median"])
        assert line.get_label().startswith(f"{entry['strategy']}: median (to optimum: ")
        assert "reached" in line.get_label()


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
    # the plot measures each run against the best any run found
    best = max(r["best_so_far"] for r in got.rows)
    for e in got.summary:
        assert e["gap"]["median"][-1] == pytest.approx(best - e["final_best"])
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


def test_model_record_names_where_the_float_model_came_from(tmp_path):
    from bitscout.cli.compare import model_record

    (tmp_path / "model.pt").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert model_record("trained", tmp_path) == {
        "source": "trained", "checkpoint": str(tmp_path / "model.pt"), "checkpoint_sha256": digest
    }  # fmt: skip
    recorded = {"trained": True, "path": str(tmp_path / "model.pt"), "sha256": digest}
    assert model_record(recorded, tmp_path) == model_record("trained", tmp_path)
    given = {"path": "ck.pt", "sha256": "ab"}
    assert model_record(given, tmp_path) == {
        "source": "checkpoint", "checkpoint": "ck.pt", "checkpoint_sha256": "ab"
    }  # fmt: skip
    assert model_record("as built", tmp_path) == {"source": "as built"}
