"""Report tables against hand-computed values; plots exist, are PNG, one panel per metric."""

import json
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from bitscout.cli import main
from bitscout.errors import ConfigError
from bitscout.results.plots import metrics_figure
from bitscout.results.report import (
    Run,
    best_so_far,
    load_run,
    parse_objective_arg,
    rerank_objective,
    rescore,
    wilson_interval,
    winners,
)  # fmt: skip
from bitscout.study.objective import MetricSpec, Objective

PNG = b"\x89PNG\r\n\x1a\n"
DIMS = ["l/weight_width", "l/data_in_width"]


def trials() -> pd.DataFrame:
    """Six hand-made trials (number 4 infeasible under accuracy >= 0.5)."""
    return pd.DataFrame({
        "number": [0, 1, 2, 3, 4, 5],
        "state": ["complete"] * 6,
        "l/weight_width": [2, 4, 8, 2, 4, 8],
        "l/data_in_width": [4, 4, 4, 8, 8, 8],
        "accuracy": [0.60, 0.80, 0.90, 0.70, 0.40, 0.95],
        "average_bitwidth": [2.0, 4.0, 8.0, 2.0, 4.0, 8.0],
        "latency": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "model_size": [117.0] * 6,
        "flops": [213.0] * 6,
    })  # fmt: skip


def objective(single: bool = True, constraints: tuple = ()) -> Objective:
    metrics = (
        MetricSpec("accuracy", 2.0, "maximize"),
        MetricSpec("average_bitwidth", -0.1, "minimize"),
    )
    return Objective(metrics, single, "maximize", constraints)


def summary(obj: Objective) -> dict:
    return {
        "config": "c.toml",
        "model": "jsc-tiny",
        "dataset": "fake",
        "strategy": "bruteforce",
        "sampler": None,
        "seed": 0,
        "space_size": 6,
        "trials_total": 6,
        "unique_configs": 6,
        "failed": 0,
        "eval_samples": 200,
        "wall_s": 0.1,
        "dimensions": DIMS,
        "objective": {
            "single": obj.single,
            "direction": obj.direction,
            "metrics": [
                {"name": m.name, "scale": m.scale, "direction": m.direction} for m in obj.metrics
            ],
            "constraints": [str(c) for c in obj.constraints],
        },
    }


def test_weighted_objective_and_best_by_hand():
    df = rescore(trials(), objective())
    # 2*acc - 0.1*bits: 1.0, 1.2, 1.0, 1.2, 0.4, 1.1
    assert df["objective"].tolist() == pytest.approx([1.0, 1.2, 1.0, 1.2, 0.4, 1.1])
    best = winners(df, objective(), top=3)
    assert best["number"].tolist() == [1, 3, 5]  # ties keep the earlier trial first


def test_best_so_far_by_hand():
    values = np.array([1.0, 0.5, 2.0, 1.5, 3.0])
    feasible = np.array([False, True, True, False, True])
    got = best_so_far(values, feasible, "maximize")
    assert np.isnan(got[0])
    assert got[1:].tolist() == [0.5, 2.0, 2.0, 3.0]
    assert best_so_far(values, np.ones(5, bool), "minimize").tolist() == [1.0, 0.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (37, 50), (180, 200)])
def test_wilson_interval_by_hand(k, n):
    z = 1.959963984540054
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert hi == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert 0.0 <= lo <= p <= hi <= 1.0


def test_wilson_known_value():
    # 8 of 10: the textbook Wilson interval is (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)


def test_pareto_set_by_hand():
    obj = objective(single=False)
    df = rescore(trials(), obj)
    # maximize accuracy, minimize bits: (0.7,2) dominates (0.6,2); (0.8,4) beats (0.4,4);
    # (0.95,8) beats (0.9,8). Front: 3, 1, 5, sorted by accuracy descending.
    assert winners(df, obj)["number"].tolist() == [5, 1, 3]


def run_dir(tmp_path, obj: Objective):
    trials().to_csv(tmp_path / "trials.csv", index=False)
    (tmp_path / "summary.json").write_text(json.dumps(summary(obj)))
    return tmp_path


def test_rerank_under_new_objective_and_constraint(tmp_path):
    run = load_run(run_dir(tmp_path, objective()))
    new = rerank_objective(run, "accuracy=1.0,average_bitwidth=-0.01", ["accuracy>=0.92"])
    df = rescore(run.trials, new)
    # only trial 5 is feasible (0.95 >= 0.92): 0.95 - 0.08
    assert df["feasible"].tolist() == [False] * 5 + [True]
    best = winners(df, new)
    assert best["number"].tolist() == [5]
    assert best["objective"].iloc[0] == pytest.approx(0.87)
    # without the constraint, the new weights favour accuracy: 0.95-0.08=0.87 > 0.7-0.02=0.68
    assert (
        winners(
            rescore(run.trials, rerank_objective(run, "accuracy=1.0,average_bitwidth=-0.01", [])),
            new,
        )["number"].iloc[0]
        == 5
    )
    # the original weights pick trial 1 (1.2, earliest of the tie)
    assert winners(rescore(run.trials, run.objective), run.objective)["number"].iloc[0] == 1


@pytest.mark.parametrize("text", ["accuracy", "accuracy=x", "=2", "accuracy=nan"])
def test_bad_objective_argument(text):
    with pytest.raises(ConfigError, match="--objective"):
        parse_objective_arg(text)


def test_unknown_metric_in_objective_argument():
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_objective_arg("accurracy=1.0")


def test_bad_constraint_argument(tmp_path):
    run = load_run(run_dir(tmp_path, objective()))
    with pytest.raises(ConfigError, match="--constraint"):
        rerank_objective(run, None, ["accuracy at least 0.9"])


def test_metrics_figure_has_one_panel_per_metric():
    df = rescore(trials(), objective())
    fig = metrics_figure(
        df,
        ["accuracy", "average_bitwidth", "latency", "model_size", "flops"],
        [str(n) for n in df["number"]],
    )
    assert len(fig.axes) == 5
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "accuracy",
        "average_bitwidth",
        "latency",
        "model_size",
        "flops",
    ]


def check_png(path):
    assert path.read_bytes()[:8] == PNG
    assert matplotlib.image.imread(path).ndim == 3


def test_report_command_writes_markdown_and_plots(tmp_path, capsys):
    out = run_dir(tmp_path, objective())
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "0.8000 (n=200, 95% CI" in text  # trial 1's accuracy with its interval
    for name in ("metrics", "best_so_far", "heatmap"):  # two dimensions: a heat map too
        assert f"![{name}](plots/{name}.png)" in text
        check_png(out / "plots" / f"{name}.png")


def test_report_rerank_writes_under_new_name(tmp_path):
    out = run_dir(tmp_path, objective())
    assert main(["report", str(out), "--objective", "accuracy=1.0", "--name", "acc_only"]) == 0
    ranked = pd.read_csv(out / "acc_only" / "ranked.csv")
    assert ranked.loc[ranked["objective"].idxmax(), "number"] == 5
    assert (out / "acc_only" / "report.md").exists()
    assert not (out / "report.md").exists()  # the original report is left alone


def test_multi_objective_report_draws_pareto(tmp_path):
    out = run_dir(tmp_path, objective(single=False))
    assert main(["report", str(out)]) == 0
    check_png(out / "plots" / "pareto.png")
    assert "## Pareto set" in (out / "report.md").read_text()


def test_report_on_missing_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a finished search directory" in capsys.readouterr().err


def test_run_is_frozen(tmp_path):
    run = load_run(run_dir(tmp_path, objective()))
    assert isinstance(run, Run) and run.dimensions == DIMS
