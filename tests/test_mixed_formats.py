"""Search spaces where the number format is itself a dimension: sizes, enumeration, Optuna's
conditional parameters, and what a search over them writes."""

from __future__ import annotations

import csv
import itertools
import json
import tomllib
import warnings

import numpy as np
import optuna
import pytest
from cli_support import base_doc, edit, error_problems, run_cli, write_config

from bitscout.cli import main
from bitscout.errors import ConfigError
from bitscout.quant.catalog import FORMATS, field_names
from bitscout.quant.space import parse_space
from bitscout.zoo.models import build_model

LAYER = {
    "name": ["integer", "minifloat_ieee", "log", "NA"],
    "weight_width": [5, 8],  # integer, minifloat_ieee and log take it
    "weight_frac_width": [2, 4, 6],  # integer only
    "weight_exponent_width": [2, 3],  # minifloat_ieee only
    "data_in_width": [8],
    "data_in_exponent_width": [4],
}
# integer: 2 widths x 3 fracs; minifloat_ieee: 2 widths x 2 exponents; log: 2 widths; NA: 1
SIZE = 2 * 3 + 2 * 2 + 2 + 1


def _space(layer: dict | None = None):
    table = {"seed": {"default": {"config": {"name": ["NA"]}},
                      "seq_blocks_2": {"config": layer or LAYER}}}  # fmt: skip
    return parse_space(table, build_model("jsc-tiny"))


def test_the_size_is_a_sum_over_formats_and_every_index_a_distinct_config():
    space = _space()
    assert space.size == SIZE and space.mixed
    configs = [space.config(i) for i in range(space.size)]
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == SIZE
    assert [space.index(c) for c in configs] == list(range(SIZE))
    by_format = {}
    for c in configs:
        by_format.setdefault(c["seq_blocks_2/name"], []).append(c)
    assert {k: len(v) for k, v in by_format.items()} == {
        "integer": 6, "minifloat_ieee": 4, "log": 2, "NA": 1}  # fmt: skip
    assert set(by_format["log"][0]) == {"seq_blocks_2/name", "seq_blocks_2/weight_width"}
    assert by_format["NA"] == [{"seq_blocks_2/name": "NA"}]
    frac = next(d for d in space.dimensions if d.field == "weight_frac_width")
    assert frac.formats == ("integer",)


def test_each_config_builds_the_chosen_format_with_its_own_fields():
    space = _space()
    for i in range(space.size):
        config = space.config(i)
        quant = space.resolved(config)["seq_blocks.2"]
        name = config["seq_blocks_2/name"]
        if name == "NA":
            assert quant is None
            continue
        assert quant.weight.name == name
        assert quant.weight.width == config["seq_blocks_2/weight_width"]
        if name == "integer":
            assert quant.weight.frac_width == config["seq_blocks_2/weight_frac_width"]
            assert quant.data_in.width == 8  # the fixed field applies to integer too
        if name == "log":
            assert quant.data_in.exponent_bias == 2**6 - 1  # data_in_width 8, bias default


def test_draw_asks_only_for_the_chosen_formats_fields():
    space = _space()
    for name in LAYER["name"]:
        asked = []

        def pick(d, name=name, asked=asked):
            asked.append(d.field)
            return name if d.field == "name" else d.choices[-1]

        config = space.draw(pick)
        assert space.index(config) >= 0  # a valid candidate
        want = {"integer": ["name", "weight_width", "weight_frac_width"],
                "minifloat_ieee": ["name", "weight_width", "weight_exponent_width"],
                "log": ["name", "weight_width"], "NA": ["name"]}[name]  # fmt: skip
        assert asked == want


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (
            {"name": ["integer"], "weight_exponent_width": [3]},
            "weight_exponent_width",
            "applies to none of the formats in name",
        ),
        (  # minifloat's only widths leave no mantissa: no candidate left to skip to
            {"weight_width": [3, 4], "weight_exponent_width": [3]},
            "weight_exponent_width",
            "minifloat_ieee with weight_width = 3, weight_exponent_width = 3: leaves",
        ),
        ({"weight_width": {"integer": [4], "posit": [8]}}, "weight_width.posit", "not a format"),
        ({"weight_width": {"integer": [4], "NA": [8]}}, "weight_width.NA", "not a format"),
        ({"weight_width": {"log": [1]}}, "weight_width.log", "integers in 2..9"),
        ({"weight_width": [0, 8]}, "weight_width", "each choice must suit a format in name"),
        ({"name": ["integer", "posit"]}, "name", "choices must be among"),
        ({"weight_exponent_width": [2, 9]}, "weight_exponent_width", "integers in 1..8"),
    ],
)
def test_bad_mixed_tables_name_the_field(change, field, fragment):
    with pytest.raises(ConfigError) as err:
        _space({**LAYER, **change})
    at = "seq_blocks_2.config" + (f".{field}" if field else "")
    assert err.value.key.endswith(at) and fragment in str(err.value)


def _valid_everywhere(space) -> list[dict]:
    """Every candidate index gives a config that builds, and maps back to its index."""
    configs = [space.config(i) for i in range(space.size)]
    assert [space.index(c) for c in configs] == list(range(space.size))
    for c in configs:
        assert space.invalid(c) is None
        space.resolved(c)  # parses: a valid format
    columns = space.columns(np.arange(space.size))
    for i, c in enumerate(configs):
        assert {k: columns[k][i] for k in c} == c
    return configs


def test_an_invalid_combination_is_skipped_counted_and_named():
    """minifloat_ieee with E3 at width 4 leaves no mantissa: that candidate is skipped (the
    space was refused), the rest are searched."""
    space = _space({**LAYER, "weight_width": [4, 8]})
    assert space.size == SIZE - 1 and space.skipped == 1
    assert space.skipped_note == (
        f"skipped 1 of {SIZE} candidates that are no valid format: seq_blocks_2 minifloat_ieee: "
        "1 (e.g. minifloat_ieee with weight_width = 4, weight_exponent_width = 3 "
        "(weight_exponent_width leaves width - 1 - exponent_width mantissa bits outside 1..23 "
        "(width 4)))"
    )
    configs = _valid_everywhere(space)
    minifloats = [c for c in configs if c["seq_blocks_2/name"] == "minifloat_ieee"]
    pairs = {(c["seq_blocks_2/weight_width"], c["seq_blocks_2/weight_exponent_width"])
             for c in minifloats}  # fmt: skip
    assert pairs == {(4, 2), (8, 2), (8, 3)}
    bad = {"seq_blocks_2/name": "minifloat_ieee", "seq_blocks_2/weight_width": 4,
           "seq_blocks_2/weight_exponent_width": 3}  # fmt: skip
    assert "is no valid candidate" in space.invalid(bad)
    with pytest.raises(ValueError, match="no valid candidate"):
        space.index(bad)
    assert _space().skipped == 0 and _space().skipped_note is None


MIXED_WIDTHS = {"name": ["integer", "mxint"], "weight_width": [4, 6, 8]}


def test_a_shared_list_skips_the_choices_a_format_cannot_take():
    """mxint is 8 bits wide only: widths 4 and 6 are skipped for it (the space was refused)."""
    space = _space(MIXED_WIDTHS)
    assert space.size == 3 + 1 and space.skipped == 2
    assert "seq_blocks_2 mxint: 2 (e.g. mxint with weight_width = 4" in space.skipped_note
    configs = _valid_everywhere(space)
    assert configs[-1] == {"seq_blocks_2/name": "mxint"}  # one width left: not searched
    assert space.resolved(configs[-1])["seq_blocks.2"].weight.width == 8


def test_a_format_left_with_no_candidate_is_refused():
    with pytest.raises(ConfigError) as err:
        _space({"name": ["integer", "mxint"], "weight_width": [4, 6]})
    assert str(err.value) == (
        "search.search_space.seed.seq_blocks_2.config: leaves mxint no valid candidate; e.g. "
        "mxint with weight_width = 4 (weight_width must be an integer in 8..8)"
    )


def test_per_format_choice_lists():
    """`weight_width = {integer = [4, 6, 8], mxint = [8]}`: each format its own list, so
    nothing is skipped; the dimension offers every listed choice."""
    per = {"name": ["integer", "mxint"], "weight_width": {"integer": [4, 6, 8], "mxint": [8]}}
    space = _space(per)
    assert space.size == 4 and space.skipped == 0 and space.skipped_note is None
    width = next(d for d in space.dimensions if d.field == "weight_width")
    assert width.choices == (4, 6, 8) and width.formats == ("integer",)
    assert _valid_everywhere(space) == _valid_everywhere(_space(MIXED_WIDTHS))
    # The space's table reads back (summary.json keeps it) with the per-format lists.
    again = parse_space(space.table(), build_model("jsc-tiny"))
    assert again.table() == space.table() and again.size == 4
    seed = space.table()["seed"]["seq_blocks_2"]["config"]
    assert seed["weight_width"] == {"integer": [4, 6, 8], "mxint": [8]}


def test_per_format_lists_that_differ_under_one_dimension_are_checked_when_drawn():
    """Both formats search the width with their own lists: a draw (an Optuna trial) may
    combine a format with the other's choice; `invalid` says so, for the trial to be pruned."""
    per = {"name": ["integer", "minifloat_ieee"], "weight_exponent_width": [2],
           "weight_width": {"integer": [3, 4], "minifloat_ieee": [4, 5]}}  # fmt: skip
    space = _space(per)
    width = next(d for d in space.dimensions if d.field == "weight_width")
    assert width.choices == (3, 4, 5) and width.formats == ("integer", "minifloat_ieee")
    assert space.size == 4 and len(_valid_everywhere(space)) == 4
    drawn = space.draw(lambda d: d.choices[-1] if d.field == "name" else d.choices[0])
    assert drawn == {"seq_blocks_2/name": "minifloat_ieee", "seq_blocks_2/weight_width": 3}
    assert "3 is not a choice of minifloat_ieee" in space.invalid(drawn)


# --- searches ---------------------------------------------------------------------------------


def _doc(strategy: str, trials: int) -> dict:
    doc = base_doc()
    doc["search"]["search_space"]["seed"]["seq_blocks_2"]["config"] = dict(LAYER)
    doc = edit(doc, "search.strategy.setup.n_trials", trials)
    if strategy == "bruteforce":
        return edit(doc, "search.strategy.name", "bruteforce")
    return edit(doc, "search.strategy.setup", {**doc["search"]["strategy"]["setup"],
                                               "sampler": strategy, "n_trials": trials})  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    config = write_config(root / "c.toml", base_doc())
    assert main(["train", str(config), "--out", str(root / "t")]) == 0
    return root / "t" / "model.pt"


def _no_nan(constant: str) -> None:
    raise AssertionError(f"summary.json holds {constant}, which is not JSON")


def test_brute_force_enumerates_every_format_and_best_toml_reapplies(tmp_path, capsys, ckpt):
    config = write_config(tmp_path / "c.toml", _doc("bruteforce", SIZE))
    out = tmp_path / "run"
    assert run_cli(["search", str(config), "--out", str(out), "--load", str(ckpt)], capsys).rc == 0
    with (out / "trials.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == SIZE and all(r["state"] == "complete" for r in rows)
    log_rows = [r for r in rows if r["seq_blocks_2/name"] == "log"]
    assert len(log_rows) == 2
    assert all(r["seq_blocks_2/weight_frac_width"] == "" for r in log_rows)  # not log's field
    best = tomllib.loads((out / "best.toml").read_text())["passes"]["quantize"]
    layer = best["seq_blocks_2"]["config"]
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_no_nan)
    chosen = summary["best"]["config"]["seq_blocks_2/name"]
    assert layer["name"] == chosen
    fields = {k.split("/")[1] for k in summary["best"]["config"]}  # the chosen format's only
    assert fields <= {"name", *field_names(FORMATS.get(chosen))}
    if chosen != "NA":  # the chosen format's own fields, every default written out
        assert set(layer) <= {"name", *field_names(FORMATS.get(chosen))}
        assert {"weight_width", "data_in_width"} <= set(layer)
        extra = {"integer": "weight_frac_width", "minifloat_ieee": "weight_exponent_width",
                 "log": "weight_exponent_bias"}[chosen]  # fmt: skip
        assert extra in layer
    outcome = run_cli(["quantize", str(config), "--load", str(ckpt), "--quant",
                       str(out / "best.toml")], capsys)  # fmt: skip
    assert outcome.rc == 0
    assert f"{summary['best']['metrics']['accuracy']:.4f}" in outcome.out


def _searched_trials(doc, tmp_path, capsys, ckpt):
    """Run `bitscout search` on `doc`; the study's trials as Optuna stored them."""
    config = write_config(tmp_path / "c.toml", doc)
    out = tmp_path / "run"
    outcome = run_cli(["search", str(config), "--out", str(out), "--load", str(ckpt)], capsys)
    assert outcome.rc == 0, outcome.err
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))  # fmt: skip
    return optuna.load_study(study_name="bitscout", storage=storage).trials


@pytest.mark.parametrize("sampler", ["tpe", "nsgaii", "random"])
def test_optuna_samplers_use_conditional_parameters(tmp_path, capsys, ckpt, sampler):
    trials = _searched_trials(_doc(sampler, 30), tmp_path, capsys, ckpt)
    assert len(trials) == 30
    for t in trials:
        name = t.params["seq_blocks_2/name"]
        frac = "seq_blocks_2/weight_frac_width" in t.params
        assert frac == (name == "integer")
        assert ("seq_blocks_2/weight_exponent_width" in t.params) == (name == "minifloat_ieee")
    assert len({t.params["seq_blocks_2/name"] for t in trials}) > 1


def test_the_grid_sampler_refuses_a_conditional_space(tmp_path, capsys, ckpt):
    config = write_config(tmp_path / "c.toml", _doc("grid", 10))
    outcome = run_cli(["search", str(config), "--load", str(ckpt), "--out", str(tmp_path / "o")],
                      capsys)  # fmt: skip
    assert error_problems(outcome) == [] and "use bruteforce" in outcome.err


def test_formats_multiply_across_layers():
    model = build_model("jsc-toy")
    tables = {"default": {"config": {"name": ["NA"]}}}
    for layer in ("seq_blocks_2", "seq_blocks_5"):
        tables[layer] = {"config": {"name": ["integer", "binary"], "weight_width": [4, 8],
                                    "weight_bipolar": [True, False]}}  # fmt: skip
    space = parse_space({"seed": tables}, model)
    assert space.size == (2 + 2) ** 2
    seen = {tuple(sorted(space.config(i).items())) for i in range(space.size)}
    assert len(seen) == 16
    for combo in itertools.product(["integer", "binary"], repeat=2):
        assert any(
            tuple(dict(c)[f"{layer}/name"] for layer in ("seq_blocks_2", "seq_blocks_5")) == combo
            for c in seen
        )


def test_an_optuna_search_prunes_a_skipped_candidate_it_draws(tmp_path, capsys, ckpt):
    """Optuna's categorical dimensions can combine minifloat E3 with width 4 (skipped by the
    space): such a trial is pruned before it is scored; the search goes on."""
    doc = _doc("random", 30)
    doc["search"]["search_space"]["seed"]["seq_blocks_2"]["config"]["weight_width"] = [4, 8]
    trials = _searched_trials(doc, tmp_path, capsys, ckpt)
    space = _space({**LAYER, "weight_width": [4, 8]})
    skipped = {t.number for t in trials if space.invalid(t.params) is not None}
    assert skipped  # the seed draws the skipped candidate
    pruned = {t.number for t in trials if t.state == optuna.trial.TrialState.PRUNED}
    assert pruned == skipped
    assert all(
        t.state == optuna.trial.TrialState.COMPLETE for t in trials if t.number not in pruned
    )


def test_sensitivity_probes_only_what_each_format_takes():
    from bitscout.analysis.sensitivity import probes  # the analysis layer, imported late
    from bitscout.quant.tables import parse_layer_config

    per = {"name": ["integer", "minifloat_ieee"], "weight_exponent_width": [2],
           "weight_width": {"integer": [3, 4], "minifloat_ieee": [4, 5]}}  # fmt: skip
    found = probes(_space(per))
    widths = {(p.format, p.choice) for p in found if p.dimension == "seq_blocks_2/weight_width"}
    assert widths == {("integer", 3), ("integer", 4), ("minifloat_ieee", 4), ("minifloat_ieee", 5)}
    for p in found:
        parse_layer_config(p.table, p.layer)  # every probe is a valid format


def test_the_commands_say_what_the_space_skipped(tmp_path, capsys):
    """`bitscout space` and `bitscout search` print the skipped count in one line."""
    layer = {"name": ["integer", "mxint"], "weight_width": [4, 6, 8]}
    doc = edit(base_doc(), "search.search_space.seed.seq_blocks_2.config", layer)
    doc = edit(doc, "search.strategy.setup.sampler", "tpe")
    config = write_config(tmp_path / "c.toml", doc)
    note = "skipped 2 of 6 candidates that are no valid format: seq_blocks_2 mxint: 2"
    space = run_cli(["space", str(config)], capsys)
    assert space.rc == 0 and note in space.out
    search = run_cli(["search", str(config), "--out", str(tmp_path / "r")], capsys)
    assert search.rc == 0, search.err
    assert [line for line in search.out.splitlines() if note in line] != []


def test_a_report_without_a_full_grid_draws_no_empty_heatmap(tmp_path, capsys):
    """Two dimensions, but every trial picked mxint, which takes no weight_width choice: the
    heatmap would be empty (matplotlib warned about singular limits); none is drawn."""
    layer = {"name": ["mxint", "integer"], "weight_width": {"mxint": [8], "integer": [4, 6]}}
    doc = edit(base_doc(), "search.search_space.seed.seq_blocks_2.config", layer)
    doc = edit(doc, "search.strategy.name", "bruteforce")
    doc = edit(doc, "search.strategy.setup.n_trials", 1)
    config = write_config(tmp_path / "c.toml", doc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome = run_cli(["search", str(config), "--out", str(tmp_path / "r")], capsys)
    assert outcome.rc == 0, outcome.err
    assert not (tmp_path / "r" / "plots" / "heatmap.png").exists()
