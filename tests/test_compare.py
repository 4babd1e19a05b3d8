"""`run_compare` on the 48-candidate seed space of examples/jsc_tiny_lab3.toml, offline on the
`fake` dataset; one float checkpoint and one full comparison are shared by the module
(fixtures in tests/compare_support.py). Bad input is in tests/test_compare_inputs.py."""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from compare_support import (  # noqa: F401 - the fixtures
    PNG_SIGNATURE,
    REPEATS,
    SIZE,
    STRATEGIES,
    ckpt,
    config_path,
    of,
    quiet,
    read_csv,
    result,
    workdir,
)

from bitscout.analysis import compare
from bitscout.analysis.compare import COLUMNS
from bitscout.cli import main
from bitscout.cli.compare import run_compare
from bitscout.cli.config import load_config
from bitscout.results import compare_out

# --- the full comparison ------------------------------------------------------------------


def test_csv_has_exactly_the_columns_and_one_row_per_trial(result, workdir):  # noqa: F811
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


def test_bruteforce_reaches_the_optimum_by_its_last_trial(result):  # noqa: F811
    for seed in range(REPEATS):
        run = of(result.rows, "bruteforce", seed)
        assert run[-1]["regret"] == 0.0
        assert run[-1]["best_so_far"] == result.optimum
        # our brute force walks the space in index order, whatever the seed
        assert len({r["config"] for r in run}) == SIZE


def test_optimum_is_the_best_brute_force_objective(result):  # noqa: F811
    objectives = [r["objective"] for r in of(result.rows, "bruteforce", 0)]
    assert result.optimum == max(objectives)  # the example maximizes, with no constraints
    assert all(r["objective"] <= result.optimum for r in result.rows)


def test_regret_is_never_negative_and_best_so_far_is_monotone(result):  # noqa: F811
    for r in result.rows:
        assert r["regret"] is not None and r["regret"] >= 0
        assert math.isclose(r["regret"], result.optimum - r["best_so_far"], abs_tol=1e-12)
    for name in STRATEGIES:
        for seed in range(REPEATS):
            best = [r["best_so_far"] for r in of(result.rows, name, seed)]
            assert best == sorted(best)
            objectives = [r["objective"] for r in of(result.rows, name, seed)]
            assert best[-1] == max(objectives)


def test_each_distinct_config_is_evaluated_at_most_once(result):  # noqa: F811
    assert result.evaluated <= SIZE
    configs = {r["config"] for r in result.rows}
    assert len(configs) <= result.evaluated  # every config seen went through the cache


def test_shared_cache_counts_candidates(workdir, config_path, ckpt, monkeypatch):  # noqa: F811
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


def test_summary_per_strategy(result):  # noqa: F811
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


def test_markdown_names_every_strategy(result, workdir):  # noqa: F811
    text = (workdir / "out" / "compare.md").read_text()
    for name in STRATEGIES:
        assert f"| {name} |" in text
    assert f"space of {SIZE} candidates" in text
    assert f"{result.evaluated} distinct configs evaluated" in text
    assert "trials to optimum (KM median; seeds reached)" in text


def test_plot_is_a_valid_png(result, workdir):  # noqa: F811
    path = workdir / "out" / "plots" / "compare.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def _drawn_axes(result, tmp_path, monkeypatch):  # noqa: F811
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


def test_plot_names_each_band_and_keeps_them_apart(result, tmp_path, monkeypatch):  # noqa: F811
    ax = _drawn_axes(result, tmp_path, monkeypatch)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for entry in result.summary:
        assert f"{entry['strategy']}: interquartile range" in labels
    hatches = [c.get_hatch() for c in ax.collections]
    assert len(hatches) == len(result.summary) == len(set(hatches))  # one pattern per band


def test_same_seeds_give_the_same_rows(result, workdir, config_path, ckpt):  # noqa: F811
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


def test_table_and_console_show_the_censored_trials_to_the_optimum(result, workdir):  # noqa: F811
    text = (workdir / "out" / "compare.md").read_text()
    for entry in result.summary:
        seeds = entry["seeds"]
        reached = seeds - entry["never_optimum"]
        median = entry["trials_to_optimum"]
        shown = f"> {SIZE}" if median is None else f"{median:.6g}"
        assert f"| {shown}; {reached}/{seeds} |" in text
        assert entry["reached_optimum"] == reached / seeds


def test_each_final_pick_is_scored_once_on_the_test_split(result, workdir):  # noqa: F811
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


def _weights_sha256(ckpt: Path) -> str:  # noqa: F811
    digest = hashlib.sha256()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_provenance_records_the_command_options_code_and_model(result, workdir, ckpt,  # noqa: F811
                                                               config_path):  # fmt: skip  # noqa: F811
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


def test_the_recorded_command_re_derives_the_table(workdir, config_path, ckpt):  # noqa: F811
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


def test_plot_draws_median_regret_on_a_log_axis(result, tmp_path, monkeypatch):  # noqa: F811
    ax = _drawn_axes(result, tmp_path, monkeypatch)
    assert ax.get_yscale() == "symlog"
    assert "regret" in ax.get_ylabel()
    for line, entry in zip(ax.get_lines(), result.summary, strict=True):
        np.testing.assert_array_equal(line.get_ydata(), entry["regret"]["median"])
        assert line.get_label().startswith(f"{entry['strategy']}: median (to optimum: ")
        assert "reached" in line.get_label()


# --- spaces too large to enumerate --------------------------------------------------------


def test_too_large_space_compares_without_regret(workdir, config_path, ckpt, monkeypatch):  # noqa: F811
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
