"""What the output phase's speed-ups must not change: the importances are Optuna's own, the
pictures keep their pixels, the collector is left as it was found."""

import gc
import io

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.figure import Figure
from optuna.distributions import CategoricalDistribution
from optuna.importance import PedAnovaImportanceEvaluator
from PIL import Image

from bitscout.objective import MetricSpec, Objective
from bitscout.results import plots
from bitscout.results.ranking import param_importances


def _reference(df: pd.DataFrame, dims: list[str], up: bool) -> dict[str, float]:
    """PED-ANOVA the plain way: every trial made by create_trial and added one by one."""
    choices = {d: tuple(sorted(df[d].unique().tolist(), key=str)) for d in dims}
    study = optuna.create_study(direction="maximize" if up else "minimize")
    for row in df.to_dict("records"):
        study.add_trial(optuna.trial.create_trial(
            params={d: row[d] for d in dims}, value=float(row["objective"]),
            distributions={d: CategoricalDistribution(choices[d]) for d in dims},
        ))  # fmt: skip
    found = PedAnovaImportanceEvaluator().evaluate(study)
    total = sum(found.values())
    return {k: v / total for k, v in sorted(found.items(), key=lambda kv: kv[1], reverse=True)}


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_importances_are_exactly_optunas_on_the_distinct_configs(direction):
    rng = np.random.default_rng(1)
    n = 400
    df = pd.DataFrame({
        "l1/data_in_width": rng.choice([4, 8, 16], n), "l1/weight_width": rng.choice([2, 4, 8], n),
        "l2/name": rng.choice(["integer", "minifloat"], n), "number": range(n),
    })  # fmt: skip
    df["objective"] = df["l1/weight_width"] * 1.0 + (df["l2/name"] == "integer") * 3.0
    df["objective"] += rng.normal(0, 0.5, n)
    dims = ["l1/data_in_width", "l1/weight_width", "l2/name"]
    objective = Objective((MetricSpec("accuracy", 1.0, direction),))
    distinct = df.drop_duplicates(dims, keep="first")
    assert len(distinct) < n  # duplicates present: only distinct configs count
    found = param_importances(df, dims, objective)
    reference = _reference(distinct.sample(len(distinct), random_state=0), dims,
                           direction == "maximize")  # fmt: skip
    assert list(found) == list(reference)
    assert found == pytest.approx(reference, rel=1e-12, abs=0)


def test_png_keeps_its_pixels_at_the_faster_compression(tmp_path):
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot(np.arange(50), np.sin(np.arange(50) / 5), "o", markersize=2.5, alpha=0.7)
    ax.set_xscale("log")
    path = plots.save(fig, tmp_path / "a.png")
    default = io.BytesIO()
    fig.savefig(default, dpi=plots.DPI, format="png")
    fast, slow = (np.asarray(Image.open(f)) for f in (path, default))
    assert fast.shape == slow.shape == (200, 300, 4)
    assert np.array_equal(fast, slow)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with plots.gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() == enabled
        with pytest.raises(RuntimeError), plots.gc_paused():
            raise RuntimeError("a picture failed")
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def _ticked(fig: Figure) -> list[list[float]]:
    """Each axis's major ticks within its view, x then y, axes by axes."""
    found = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            found.append([float(t) for t in axis.get_majorticklocs() if low <= t <= high])
    return found


def test_linear_axes_get_fewer_ticks_and_log_axes_keep_theirs(tmp_path):
    def figure() -> Figure:
        fig = Figure(figsize=(12, 9))
        linear, logged = fig.subplots(1, 2)
        linear.plot(range(11), [0.0, 0.5, 1, 2, 3, 5, 6, 7, 8, 9, 9.5])
        logged.plot([1, 1e6], [0, 1])
        logged.set_xscale("log")
        return fig

    reference = figure()
    reference.savefig(tmp_path / "reference.png")  # matplotlib's own ticks
    ours = figure()
    plots.save(ours, tmp_path / "ours.png")
    (rx, ry, rlog, _), (x, y, log, _) = _ticked(reference), _ticked(ours)
    assert log == rlog == [10.0**k for k in range(7)]  # a log axis keeps one tick a decade
    for mine, theirs in ((x, rx), (y, ry)):
        assert 3 <= len(mine) < len(theirs)
        steps = np.diff(mine)
        assert np.allclose(steps, steps[0])  # evenly spaced, on round numbers
        assert steps[0] / 10 ** np.floor(np.log10(steps[0])) in (1, 2, 2.5, 5)
