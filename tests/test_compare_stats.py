"""compare's censored statistic, threshold and budgets against hand computations: trials to
the optimum are a Kaplan-Meier median in which a seed that never got there counts as beyond
its run's length (the median of the seeds that did is biased low), with the fraction reached."""

import io
import math
import random

import numpy as np
import pytest
from rich.console import Console

from bitscout.analysis.compare import summarize
from bitscout.analysis.compare_spec import parse_budgets, parse_within
from bitscout.analysis.compare_stats import km_median
from bitscout.errors import ConfigError
from bitscout.results.compare_out import markdown, show

BUDGET = 50
OPTIMUM = 1.0


def _rows(hits: list[int | None], near: list[int | None] | None = None) -> list[dict]:
    """compare.csv-like rows, one run of BUDGET trials per seed: the best so far is 0.5 until
    trial `near[seed]` (0.995, within 1% of the optimum), then 1.0 from trial `hits[seed]`."""
    near = near or hits
    rows = []
    for seed, (hit, close) in enumerate(zip(hits, near, strict=True)):
        for trial in range(1, BUDGET + 1):
            best = 0.5
            if close is not None and trial >= close:
                best = 0.995
            if hit is not None and trial >= hit:
                best = OPTIMUM
            rows.append({"strategy": "s", "seed": seed, "trial": trial, "best_so_far": best})
    return rows


def _summary(hits: list[int | None], **kwargs) -> dict:
    (entry,) = summarize(_rows(hits, kwargs.pop("near", None)), ["s"], range(len(hits)),
                         OPTIMUM, **kwargs)  # fmt: skip
    return entry


def test_more_than_half_never_reached_is_beyond_the_budget():
    """10 seeds, 4 reached the optimum at trials 3, 7, 12 and 20 of a budget of 50: the
    survival curve ends at 6/10 > 1/2, so the median is '> 50' (the old statistic, the median
    of the 4 that got there, said 9.5)."""
    hits = [3, 7, 12, 20, None, None, None, None, None, None]
    entry = _summary(hits)
    assert entry["trials_to_optimum"] is None
    assert entry["never_optimum"] == 6 and entry["reached_optimum"] == pytest.approx(0.4)
    text = markdown([entry], "h")
    assert "| > 50; 4/10 |" in text
    assert "Kaplan-Meier" in text


def test_censored_median_by_hand():
    """10 seeds, 6 reached at 5, 8, 8, 15, 30, 41; 4 never in 50 trials. By hand: S(5) = 9/10,
    S(8) = 9/10 * 7/9 = 0.7, S(15) = 0.7 * 6/7 = 0.6, S(30) = 0.6 * 4/5 = 0.5 exactly until the
    next event at 41, so the median is (30 + 41) / 2 = 35.5."""
    hits = [5, 8, 8, 15, 30, 41, None, None, None, None]
    assert km_median(hits, [BUDGET] * 10) == 35.5
    entry = _summary(hits)
    assert entry["trials_to_optimum"] == 35.5
    assert entry["reached_optimum"] == pytest.approx(0.6)
    assert "| 35.5; 6/10 |" in markdown([entry], "h")


def test_runs_of_different_lengths_are_censored_at_their_own_length():
    """Events at 2, 3, 4, 6, 7; one seed stopped at trial 3 without reaching it (a sampler that
    ran out), four ran 10 trials without. By hand: at risk 10, 9, 7, 6, 5 (the seed censored
    at 3 is at risk at 3, not at 4): S = 0.9, 0.8, 0.8 * 6/7, * 5/6, * 4/5 = 0.457 at 7."""
    hits = [2, 3, 4, 6, 7, None, None, None, None, None]
    lengths = [10, 10, 10, 10, 10, 3, 10, 10, 10, 10]
    survival = 0.9 * (8 / 9) * (6 / 7) * (5 / 6) * (4 / 5)
    assert survival < 0.5 < survival * 5 / 4  # it crosses one half at the fifth event
    assert km_median(hits, lengths) == 7.0


def test_exactly_half_until_the_end_takes_the_midpoint_with_the_last_time():
    """R's survfit rule: a curve flat at one half to its end gives the midpoint of the flat."""
    assert km_median([1, 2, 3, 4, 5, None, None, None, None, None], [BUDGET] * 10) == 27.5


def test_without_censoring_it_is_the_ordinary_median():
    rng = random.Random(0)
    for n in range(1, 12):
        hits = [rng.randint(1, 40) for _ in range(n)]
        assert km_median(hits, [BUDGET] * n) == float(np.median(hits))
    assert km_median([None, None], [BUDGET] * 2) is None


def test_the_threshold_is_an_option():
    """within 1%: the 0.995 plateau counts (reached at trial 4); within 0.1% it does not."""
    hits, near = [30, 30, 30], [4, 4, 4]
    wide = _summary(hits, near=near, within=1.0)
    assert wide["trials_to_within"] == 4 and wide["within"] == 1.0
    tight = _summary(hits, near=near, within=0.1)
    assert tight["trials_to_within"] == 30
    text = markdown([tight], "h")
    assert "trials to within 0.1% (KM median; seeds reached)" in text
    assert "| 30; 3/3 | 30; 3/3 |" in text


def test_the_budgets_are_an_option():
    entry = _summary([5, 6, 7], budgets=(2, 10, 60))
    assert entry["best_at"] == {2: 0.5, 10: OPTIMUM}  # 60 is beyond every run
    assert "| strategy | best at 2 trials (median) | best at 10 trials (median) |" in markdown(
        [entry], "h"
    )


def test_the_console_shows_the_censored_statistic():
    console = Console(file=io.StringIO(), width=300)
    show(console, [_summary([3, 7, 12, 20, None, None, None, None, None, None])], "h")
    assert "> 50; 4/10" in console.file.getvalue()


def test_bands_are_medians_with_interquartile_ranges():
    entry = _summary([2, 4, 40])
    regret = entry["regret"]
    assert regret["median"][9] == 0.0  # trial 10: two of three seeds at the optimum
    assert regret["mean"][9] == pytest.approx(0.5 / 3)
    assert regret["q75"][9] == pytest.approx(0.25)  # numpy's linear interpolation of 0, 0, 0.5
    assert entry["gap"] is None  # no reference given: the plot draws the best so far


@pytest.mark.parametrize("value", [0, -1, 101, math.nan, math.inf, True, "1"])
def test_bad_thresholds_are_refused(value):
    with pytest.raises(ConfigError, match=r"--within: must be a percentage in \(0, 100\]"):
        parse_within(value)


@pytest.mark.parametrize("value", ["", "0", "10,5", "10,10", "a", "1.5", [3, True], []])
def test_bad_budgets_are_refused(value):
    with pytest.raises(ConfigError) as err:
        parse_budgets(value)
    assert err.value.key == "--budgets"


def test_budgets_from_both_doors():
    assert parse_budgets("10, 20,300") == (10, 20, 300)
    assert parse_budgets([1, 5]) == (1, 5)
