"""The ILP strategy's lazy probing: an option is probed only when a solution of the program
asks for it, predicted until then as its tensor's best measured option."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from digits_support import digits_mlp, trained_digits_mlp

import bitscout
from bitscout.quant.space import parse_space
from bitscout.study.store.base import STEP
from bitscout.study.strategies import ilp
from bitscout.study.strategies.ilp_model import Layout, fitted_model, groups_of

LAYER = {"name": ["integer"], "data_in_width": [4, 8], "data_in_frac_width": [2],
         "weight_width": [2, 3, 4, 8], "weight_frac_width": [1, 3, 6]}  # fmt: skip
TABLE = {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}}
OBJECTIVE = {"accuracy": 1.0, "average_bitwidth": -0.01}


@pytest.fixture(scope="module")
def mlp():
    return trained_digits_mlp()


def _space():
    space = parse_space(TABLE, digits_mlp())
    return space, Layout(groups_of(space))


@pytest.mark.parametrize("good", [1.0, -1.0])
def test_an_unmeasured_option_is_predicted_as_its_groups_best_and_never_drawn_apart(good):
    space, layout = _space()
    ref = ilp.reference(space)
    rng = np.random.default_rng(0)
    truth = [rng.normal(size=len(o)) for o in layout.options]  # an additive metric

    def value(config) -> float:
        return float(sum(t[j] for t, j in zip(truth, layout.chosen(config), strict=True)))

    # the reference and the first two other options of every group, each changed alone
    probes = [ref] + [g.apply(ref, o) for g, opts in zip(layout.groups, layout.options,
                      strict=True) for o in [o for o in opts if o != g.of(ref)][:2]]  # fmt: skip
    found = fitted_model(layout, probes, [value(c) for c in probes], good)
    for c in probes:  # additive data: the fit reproduces it
        assert found.mean(layout.features(c)) == pytest.approx(value(c), abs=1e-3)
    draws = [found.draw(np.random.default_rng(s)) for s in range(3)]
    for g, at, opts in zip(layout.groups, layout.x_at, layout.options, strict=True):
        seen = [o for o in opts if g.apply(ref, o) in probes]
        best = (max if good > 0 else min)(value(g.apply(ref, o)) for o in seen)
        for j, o in enumerate(opts):
            if o not in seen:  # as good as the group's best measured option, and certain
                assert found.mean(layout.features(g.apply(ref, o))) == pytest.approx(best, abs=1e-3)
                assert all(d.coef[at + j] == found.mean.coef[at + j] for d in draws)
    assert all(not np.allclose(d.coef, found.mean.coef) for d in draws)  # the rest are drawn


def test_unprobed_asks_for_the_first_option_no_evaluated_config_has():
    space, layout = _space()
    ref = ilp.reference(space)
    g = layout.groups[1]
    other = next(o for o in g.options if o != g.of(ref))
    known = SimpleNamespace(known={ilp._key(ref): 0})
    wanted = g.apply(ref, other)
    assert ilp.unprobed(known, layout, ref, [ref, wanted]) == wanted  # ref's options are known
    known.known[ilp._key(wanted)] = 1
    assert ilp.unprobed(known, layout, ref, [ref, wanted]) is None
    # a solution mixing two untried options asks for the first group's alone, on `ref`
    h, j = layout.groups[0], layout.groups[3]
    mixed = j.apply(h.apply(ref, next(o for o in h.options if o != h.of(ref))), j.options[-1])
    assert ilp.unprobed(known, layout, ref, [mixed]) == h.apply(ref, h.of(mixed))


def test_every_probe_is_a_trial_one_tensor_off_the_reference_that_a_solution_asked_for(
    mlp, monkeypatch
):
    asked: set[tuple[int, int]] = set()
    propose = ilp.propose

    def recording(*args):
        found = propose(*args)
        layout = args[0].layout
        asked.update((i, j) for c, _ in found for i, j in enumerate(layout.chosen(c)))
        return found

    monkeypatch.setattr(ilp, "propose", recording)
    model, data = mlp
    result = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="ilp", trials=30,
                             quiet=True)  # fmt: skip
    space, layout = _space()
    ref = ilp.reference(space)
    trials = sorted(result.study.trials, key=lambda t: t.number)
    assert len(trials) == 30 and dict(trials[0].params) == ref  # the reference comes first
    probes = [dict(t.params) for t in trials[1:] if t.user_attrs[STEP] == 0]
    assert 0 < len(probes) < ilp.probe_count(space)  # some options never probed
    for p in probes:
        off = [i for i, (a, b) in enumerate(zip(layout.chosen(p), layout.chosen(ref),
                                                strict=True)) if a != b]  # fmt: skip
        assert len(off) == 1 and (off[0], layout.chosen(p)[off[0]]) in asked


def test_a_search_interrupted_among_its_probes_resumes_as_an_uninterrupted_one(mlp, tmp_path):
    model, data = mlp
    kw = {"objective": OBJECTIVE, "strategy": "ilp", "quiet": True}
    bitscout.search(model, data, TABLE, trials=3, out=tmp_path / "r", **kw)
    whole = bitscout.search(model, data, TABLE, trials=25, out=tmp_path / "r", **kw)
    fresh = bitscout.search(model, data, TABLE, trials=25, **kw)

    def configs(result) -> list[tuple]:
        return [tuple(sorted(t.params.items()))
                for t in sorted(result.study.trials, key=lambda t: t.number)]  # fmt: skip

    assert configs(whole) == configs(fresh) and len(set(configs(whole))) == 25


def test_a_stalled_search_turns_local_within_radius_tensors_of_its_best(mlp):
    model, data = mlp
    result = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="ilp", trials=80,
                             quiet=True)  # fmt: skip
    _, layout = _space()
    trials = sorted(result.study.trials, key=lambda t: t.number)
    local = [t for t in trials if t.user_attrs.get(ilp.ROLE) == "local"]
    assert local  # the small space stalls within 80 trials
    for t in local:
        start = min(u.number for u in trials if u.user_attrs[STEP] == t.user_attrs[STEP])
        before = [u for u in trials if u.number < start]
        top = max(before, key=lambda u: (u.values[0], -u.number))  # the first of the best
        # the best had gone STALL evaluations (probes aside) without being beaten
        assert sum(u.user_attrs[STEP] > 0 for u in before if u.number > top.number) >= ilp.STALL
        apart = [a != b for a, b in zip(layout.chosen(dict(t.params)),
                                        layout.chosen(dict(top.params)), strict=True)]  # fmt: skip
        assert 0 < sum(apart) <= ilp.RADIUS
