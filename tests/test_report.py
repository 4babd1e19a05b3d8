"""Rankings and report tables against hand-computed values; re-ranking; plots are PNGs with
the panels, units and markers they should have."""

import dataclasses
import json
import math
import tomllib

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from bitscout.cli import main
from bitscout.errors import ConfigError
from bitscout.objective import MetricSpec, Objective, parse_constraint
from bitscout.results import plots
from bitscout.results.ranking import best_so_far, distinct, rescore, varying, winners
from bitscout.results.report import Run, load_run, parse_objective_arg, rerank_objective
from bitscout.results.stats import wilson_interval

PNG = b"\x89PNG\r\n\x1a\n"
DIMS = ["l/weight_width", "l/data_in_width"]
UNITS = {"accuracy": "fraction", "average_bitwidth": "bits", "latency": "ms",
         "model_size": "parameters", "flops": "FLOPs"}  # fmt: skip


def trials() -> pd.DataFrame:
    """Seven hand-made trials: number 6 proposes number 1's config again."""
    return pd.DataFrame({
        "schema_version": [3] * 7,
        "number": [0, 1, 2, 3, 4, 5, 6],
        "state": ["complete"] * 7,
        "l/weight_width": [2, 4, 8, 2, 4, 8, 4],
        "l/data_in_width": [4, 4, 4, 8, 8, 8, 4],
        "accuracy": [0.60, 0.80, 0.90, 0.70, 0.40, 0.95, 0.80],
        "average_bitwidth": [2.0, 4.0, 8.0, 2.0, 4.0, 8.0, 4.0],
        "latency": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "model_size": [117.0] * 7,
        "flops": [213.0] * 7,
    })  # fmt: skip


def objective(single: bool = True, constraints: tuple = ()) -> Objective:
    metrics = (
        MetricSpec("accuracy", 2.0, "maximize"),
        MetricSpec("average_bitwidth", -0.1, "minimize"),
    )
    return Objective(metrics, single, "maximize", constraints)


def summary(obj: Objective) -> dict:
    return {
        "schema_version": 3, "config": "c.toml", "model": "jsc-tiny", "dataset": "fake",
        "strategy": "bruteforce",
        "sampler": None, "seed": 0, "space_size": 6, "trials_total": 7, "unique_configs": 6,
        "failed": 0, "eval_samples": 200, "wall_s": 0.1, "dimensions": DIMS,
        "metric_units": UNITS,
        "objective": {
            "single": obj.single, "direction": obj.direction,
            "metrics": [{"name": m.name, "scale": m.scale, "direction": m.direction}
                        for m in obj.metrics],
            "constraints": [str(c) for c in obj.constraints],
        },
        "float": {"validation": {"accuracy": 0.9, "average_bitwidth": 32.0, "latency": 1.0,
                                 "model_size": 117.0, "flops": 213.0}, "test": None},
        "space": {"setup": {"by": "name"}, "seed": {
            "default": {"config": {"name": ["NA"]}},
            "l": {"config": {"name": ["integer"], "weight_width": [2, 4, 8],
                             "data_in_width": [4, 8], "bias_width": [8]}}}},
        "layers": {"l": "linear"},
    }  # fmt: skip


def test_weighted_objective_and_distinct_winners_by_hand():
    df = rescore(trials(), objective())
    # 2*acc - 0.1*bits: 1.0, 1.2, 1.0, 1.2, 0.4, 1.1, 1.2
    assert df["objective"].tolist() == pytest.approx([1.0, 1.2, 1.0, 1.2, 0.4, 1.1, 1.2])
    assert df["scaled_accuracy"].tolist() == pytest.approx([1.2, 1.6, 1.8, 1.4, 0.8, 1.9, 1.6])
    best = winners(df, objective(), DIMS, top=3)
    # trial 6 repeats trial 1's config: one row, proposed twice; ties keep the earlier first
    assert best["number"].tolist() == [1, 3, 5]
    assert best["proposals"].tolist() == [2, 1, 1]
    assert len(distinct(df, DIMS)) == 6


def test_infeasible_rows_name_the_constraint_they_break():
    constraint = parse_constraint("accuracy", ">= 0.75", "c")
    df = rescore(trials(), objective(constraints=(constraint,)))
    assert df["state"].tolist() == ["infeasible", "complete", "complete", "infeasible",
                                    "infeasible", "complete", "complete"]  # fmt: skip
    assert df.loc[0, "reason"] == "accuracy 0.6 < 0.75"
    assert df.loc[4, "reason"] == "accuracy 0.4 < 0.75"
    assert df.loc[1, "reason"] == ""


def test_varying_and_constant_metrics():
    changing, constant = varying(trials(), ["accuracy", "latency", "model_size", "flops", "x"])
    assert changing == ["accuracy"]
    assert constant == {"latency": 1.0, "model_size": 117.0, "flops": 213.0}


def test_best_so_far_by_hand():
    values = np.array([1.0, 0.5, 2.0, 1.5, 3.0])
    feasible = np.array([False, True, True, False, True])
    got = best_so_far(values, feasible, "maximize")
    assert np.isnan(got[0])
    assert got[1:].tolist() == [0.5, 2.0, 2.0, 3.0]
    assert best_so_far(values, np.ones(5, bool), "minimize").tolist() == [1.0, 0.5, 0.5, 0.5, 0.5]


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, written out here as the reference."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (37, 50), (180, 200)])
def test_wilson_interval_by_hand(k, n):
    lo, hi = wilson_interval(k, n)
    want_lo, want_hi = _wilson(k, n)
    assert lo == pytest.approx(want_lo, abs=1e-12)
    assert hi == pytest.approx(want_hi, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_known_value():
    # 8 of 10: the textbook Wilson interval is (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)


def test_pareto_set_of_distinct_configs_by_hand():
    obj = objective(single=False)
    df = rescore(trials(), obj)
    # maximize accuracy, minimize bits: (0.7,2) dominates (0.6,2); (0.8,4) beats (0.4,4);
    # (0.95,8) beats (0.9,8). Front: 3, 1 (twice, shown once), 5, by accuracy descending.
    front = winners(df, obj, DIMS)
    assert front["number"].tolist() == [5, 1, 3] and front["proposals"].tolist() == [1, 2, 1]


def run_dir(tmp_path, obj: Objective):
    trials().to_csv(tmp_path / "trials.csv", index=False)
    (tmp_path / "summary.json").write_text(json.dumps(summary(obj)))
    return tmp_path


def test_rerank_recomputes_every_derived_column_and_writes_best_toml(tmp_path, capsys):
    out = run_dir(tmp_path, objective())
    args = ["report", str(out), "--objective", "accuracy=1.0,average_bitwidth=-0.01",
            "--constraint", "accuracy>=0.92", "--name", "strict"]  # fmt: skip
    assert main(args) == 0
    ranked = pd.read_csv(out / "strict" / "ranked.csv", keep_default_na=False, na_values=[""])
    assert ranked["scaled_accuracy"].tolist() == pytest.approx(ranked["accuracy"].tolist())
    assert ranked["scaled_average_bitwidth"].tolist() == pytest.approx(
        (-0.01 * ranked["average_bitwidth"]).tolist()
    )
    assert ranked["objective"].tolist() == pytest.approx(
        (ranked["accuracy"] - 0.01 * ranked["average_bitwidth"]).tolist()
    )
    assert ranked["feasible"].tolist() == [False] * 5 + [True, False]
    assert ranked.loc[0, "reason"] == "accuracy 0.6 < 0.92"
    best = tomllib.loads((out / "strict" / "best.toml").read_text())
    assert best["trial"] == 5
    assert best["passes"]["quantize"]["l"]["config"]["weight_width"] == 8
    shown = " ".join(capsys.readouterr().out.split())
    assert "best config: l(w=8 in=8)" in shown and "best score: 0.87" in shown


def test_rerank_original_weights_pick_the_earliest_of_a_tie(tmp_path):
    run = load_run(run_dir(tmp_path, objective()))
    assert winners(rescore(run.trials, run.objective), run.objective, DIMS)["number"].iloc[0] == 1


@pytest.mark.parametrize("text", ["accuracy", "accuracy=x", "=2", "accuracy=nan"])
def test_bad_objective_argument(text):
    with pytest.raises(ConfigError, match="--objective"):
        parse_objective_arg(text)


def test_unknown_metric_in_objective_argument_suggests():
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        parse_objective_arg("accurracy=1.0")


def test_bad_constraint_argument_names_the_flag(tmp_path):
    run = load_run(run_dir(tmp_path, objective()))
    with pytest.raises(ConfigError, match="--constraint"):
        rerank_objective(run, None, ["accuracy at least 0.9"])
    with pytest.raises(ConfigError, match="--constraint"):
        rerank_objective(run, "accuracy=1", ["bops <= 3"])  # bops is not in trials.csv


def test_metrics_png_has_a_panel_per_varying_metric_with_units_and_markers(tmp_path):
    df = rescore(trials(), objective())
    changing, _ = varying(df, list(UNITS))
    path = plots.metrics_png(df, changing, UNITS, tmp_path / "m.png")
    check_png(path)
    assert changing == ["accuracy", "average_bitwidth"]
    fig_axes = []
    original = plots.save
    try:
        plots.save = lambda fig, p: fig_axes.extend(fig.axes) or p
        plots.metrics_png(df, changing, UNITS, tmp_path / "n.png")
    finally:
        plots.save = original
    assert [ax.get_ylabel() for ax in fig_axes] == [
        "accuracy [fraction]",
        "average_bitwidth [bits]",
    ]
    for ax in fig_axes:  # points, not lines joining trials
        assert all(line.get_linestyle() == "None" for line in ax.get_lines())


def test_heatmap_text_is_readable_on_every_colour():
    assert plots._text_colour((1.0, 1.0, 0.3, 1.0)) == "black"  # viridis' yellow end
    assert plots._text_colour((0.27, 0.0, 0.33, 1.0)) == "white"  # its dark purple end


def check_png(path):
    assert path.read_bytes()[:8] == PNG
    assert matplotlib.image.imread(path).ndim == 3


def test_report_command_writes_markdown_and_plots(tmp_path, capsys):
    out = run_dir(tmp_path, objective())
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    lo, hi = _wilson(160, 200)  # trial 1's accuracy, 0.8 of 200 rows, with its interval
    assert f"0.8000 ({lo:.4f}-{hi:.4f})" in text
    assert "| float | | | every layer float |" in text
    assert "latency 1 [ms]" in text and "model_size 117 [parameters]" in text  # said once
    for name in ("metrics", "best_so_far", "heatmap", "tradeoff", "importances"):
        assert f"![{name}](plots/{name}.png)" in text
        check_png(out / "plots" / f"{name}.png")


def test_multi_objective_report_draws_pareto(tmp_path):
    out = run_dir(tmp_path, objective(single=False))
    assert main(["report", str(out)]) == 0
    check_png(out / "plots" / "pareto.png")
    assert "## Pareto set" in (out / "report.md").read_text()


def test_report_on_missing_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a finished search directory" in capsys.readouterr().err


def test_run_is_frozen(tmp_path):
    """A run read back cannot be rebound: a re-ranking makes a new objective, never edits the
    run's own."""
    run = load_run(run_dir(tmp_path, objective()))
    assert isinstance(run, Run) and run.dimensions == DIMS
    for field, value in (("objective", objective(single=False)), ("trials", trials().head(1)),
                         ("summary", {}), ("dimensions", []), ("path", None)):  # fmt: skip
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(run, field, value)
    assert run.objective == objective() and len(run.trials) == len(trials())


def test_pngs_written_behind_are_whole_and_the_same_pixels_when_the_block_ends(tmp_path):
    df = rescore(trials(), objective())
    changing, _ = varying(df, list(UNITS))
    plots.metrics_png(df, changing, UNITS, tmp_path / "now.png")
    # a user's own figure.dpi changes no report figure
    with plots.written_behind(), matplotlib.rc_context({"figure.dpi": 50}):
        paths = [plots.metrics_png(df, changing, UNITS, tmp_path / f"behind{i}.png")
                 for i in range(3)]  # fmt: skip
    reference = matplotlib.image.imread(tmp_path / "now.png")
    assert reference.shape == (round(100 * (1.9 * 2 + 0.6)), 800, 4)  # inches x 100 dpi
    for path in paths:
        check_png(path)
        np.testing.assert_array_equal(matplotlib.image.imread(path), reference)


def test_an_error_writing_behind_is_raised_when_the_block_ends(tmp_path):
    df = rescore(trials(), objective())
    (tmp_path / "m.png").mkdir()  # the file cannot replace a directory
    with pytest.raises(OSError), plots.written_behind():
        plots.metrics_png(df, ["accuracy"], UNITS, tmp_path / "m.png")
    assert list((tmp_path / "m.png").iterdir()) == []
