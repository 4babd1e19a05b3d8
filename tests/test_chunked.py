"""Brute force in bounded memory: one trial per chunk of candidates, its results in the
chunk's token (search/chunks.py), and the columnar report that reads them back."""

from __future__ import annotations

import csv
import json
import signal

import numpy as np
import pytest
import tomli_w
from optuna.trial import TrialState
from reliability_support import assets, complete, config_doc, load, run  # noqa: F401
from test_large_spaces import _space, _three

LAYER_48 = {  # the seed's 48 choices
    "name": ["integer"], "data_in_width": [4, 8, 16], "data_in_frac_width": ["NA"],
    "weight_width": [2, 4, 8, 16], "weight_frac_width": ["NA"],
    "bias_width": [2, 4, 8, 16], "bias_frac_width": ["NA"],
}  # fmt: skip


# --- brute force in bounded memory: one trial per chunk ---------------------------------------


def _chunked(assets: dict, tmp_path, name: str = "chunked") -> dict:  # noqa: F811
    doc = config_doc("bruteforce", 48)
    doc["search"]["strategy"]["setup"]["chunked"] = True
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(doc))
    return {**assets, name: path}


def _rows(out) -> list[dict[str, str]]:
    with (out / "trials.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _by_config(rows: list[dict[str, str]]) -> dict[tuple, dict[str, str]]:
    return {tuple(v for k, v in r.items() if "/" in k): r for r in rows}


def test_a_chunked_brute_force_records_what_one_trial_per_candidate_does(assets, tmp_path):  # noqa: F811
    paths = _chunked(assets, tmp_path)
    rc, err = run(paths, tmp_path / "plain")
    assert rc == 0, err
    rc, err = run(paths, tmp_path / "chunked", config="chunked")
    assert rc == 0, err
    plain, chunked = _by_config(_rows(tmp_path / "plain")), _by_config(_rows(tmp_path / "chunked"))
    assert len(chunked) == len(_rows(tmp_path / "chunked")) == 48 and chunked.keys() == plain.keys()
    space = _space()
    for key, row in chunked.items():
        other = plain[key]
        for col in ("state", "accuracy", "average_bitwidth", "loss", "objective", "reason"):
            assert row[col] == other[col], col
        config = {k: int(v) for k, v in row.items() if "/" in k}
        assert int(row["number"]) == space.index(config)  # rows are numbered by candidate
    study = load(tmp_path / "chunked" / "study.journal")
    assert len(study.get_trials(deepcopy=False)) == 6  # 48 candidates in chunks of 8
    summary = json.loads((tmp_path / "chunked" / "summary.json").read_text())
    single = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert summary["complete"] == 48 == summary["unique_configs"] == summary["trials_run"]
    assert summary["best"]["config"] == single["best"]["config"]
    assert summary["best"]["number"] == space.index(summary["best"]["config"])


def test_a_chunked_brute_force_resumes_after_sigkill_with_nothing_lost_or_repeated(
    assets,  # noqa: F811
    tmp_path,
):
    paths = _chunked(assets, tmp_path)
    out = tmp_path / "run"
    # killed right after the second chunk was stored, then in the middle of the third
    for env in ({"DRIVER_KILL_AFTER": "2"}, {"DRIVER_KILL_AT": "5"}):
        rc, err = run(paths, out, env=env, config="chunked")
        assert rc == -signal.SIGKILL, err
        tokens = complete(load(out / "study.journal"))
        assert sum(t.user_attrs["count"] for t in tokens) == 16
        assert 8 <= len(_rows(out)) <= 16  # trials.csv streams whole chunks as they end
    rc, err = run(paths, out, config="chunked")
    assert rc == 0, err
    rows = _rows(out)
    assert len(rows) == 48 == len(_by_config(rows))
    study = load(out / "study.journal")
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert [t.user_attrs["failure"] for t in failed] == ["interrupted"]
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _chunked_workers(paths: dict, tmp, storage: str, study: str) -> None:
    _three(paths, tmp, "chunked", "--storage", storage, "--study", study)
    tokens = load(storage, study).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert sum(t.user_attrs["count"] for t in tokens) == 48
    assert len({t.user_attrs["worker"] for t in tokens}) >= 2, "the work was shared"
    rows = _rows(tmp / "w0")
    assert len(rows) == 48 == len(_by_config(rows))


def test_a_chunked_brute_force_is_shared_through_a_journal_file(assets, tmp_path):  # noqa: F811
    paths = _chunked(assets, tmp_path)
    _chunked_workers(paths, tmp_path, str(tmp_path / "shared.journal"), "shared")


def test_a_chunked_brute_force_is_shared_through_postgresql(
    assets,  # noqa: F811
    tmp_path,
    postgres_url,
    study_name,
):
    paths = _chunked(assets, tmp_path)
    _chunked_workers(paths, tmp_path, postgres_url, study_name)


def test_chunk_codec_round_trips_exactly_and_the_bitset_counts():
    from bitscout.results.trials import Bitset, Result
    from bitscout.study.chunks import decode, encode

    rng = np.random.default_rng(0)
    values = rng.random((300, 3))
    results = [Result({"a": v[0], "b": v[1], "c": v[2]}, [0.0], {}, True, False, 0.0)
               for v in values]  # fmt: skip
    results[7] = Result({}, [], {}, False, False, 0.0, failure="boom")
    indices = rng.choice(10**9, 300, replace=False)
    got_indices, columns = decode(encode(indices, results, ["a", "b", "c"]), ["a", "b", "c"])
    assert got_indices.tolist() == indices.tolist()
    assert np.isnan(columns["a"][7])
    keep = np.arange(300) != 7
    assert (columns["b"][keep] == values[keep, 1]).all()  # bit for bit
    bits = Bitset(10**9)
    bits.add_many(indices[:150])
    bits.add(int(indices[200]))
    assert all(i in bits for i in indices[:150]) and indices[200] in bits
    assert not any(i in bits for i in indices[150:200])


@pytest.mark.parametrize("k", [2, 3])
def test_the_pareto_front_equals_the_quadratic_definition(k):
    from bitscout.objective import pareto_front

    rng = np.random.default_rng(k)
    for _ in range(200):
        points = rng.integers(0, 5, (rng.integers(1, 40), k)).astype(float)
        dirs = [("maximize", "minimize")[int(b)] for b in rng.integers(0, 2, k)]
        sign = np.array([1.0 if d == "maximize" else -1.0 for d in dirs])
        arr = points * sign
        expected = [i for i, p in enumerate(arr)
                    if not (np.all(arr >= p, axis=1) & np.any(arr > p, axis=1)).any()]  # fmt: skip
        assert pareto_front(points.tolist(), dirs) == expected


def test_a_brute_force_over_100000_candidates_is_chunked_and_resumes_after_sigkill(tmp_path):
    """jsc-toy's 3 Linear layers x the seed's 48 choices: 110,592 candidates, chunked without
    being asked, in chunks of 256; killed after two chunks, resumed to n_trials = 1024."""
    from bitscout.cli import main

    doc = config_doc("bruteforce", 1024)
    doc["model"] = "jsc-toy"
    doc["search"]["search_space"]["seed"] = {"default": {"config": LAYER_48}}
    cfg = tmp_path / "toy.toml"
    cfg.write_text(tomli_w.dumps(doc))
    assert main(["train", str(cfg), "--out", str(tmp_path / "train")]) == 0
    paths = {"toy": cfg, "ckpt": tmp_path / "train" / "model.pt"}
    out = tmp_path / "run"
    rc, err = run(paths, out, env={"DRIVER_KILL_AFTER": "2"}, config="toy")
    assert rc == -signal.SIGKILL, err
    study = load(out / "study.journal")
    assert study.user_attrs["chunked"] is True
    assert [t.user_attrs["count"] for t in complete(study)] == [256, 256]
    rc, err = run(paths, out, config="toy")
    assert rc == 0, err
    rows = _rows(out)
    assert len(rows) == 1024 == len({r["number"] for r in rows}) == len(_by_config(rows))
    assert sum(t.user_attrs["count"] for t in complete(load(out / "study.journal"))) == 1024
