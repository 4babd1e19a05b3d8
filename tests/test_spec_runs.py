"""The front door's runs: resume and overwrite, quiet by default with lines through logging,
a user's loss function (the same from Python as from a config: tests/test_spec.py)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from spec_support import MODEL, SPACE
from spec_support import data as _data
from spec_support import python_error as _python_error
from spec_support import space as _space

import bitscout
from bitscout.errors import ConfigError

BIG = _space([2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24])  # 144 candidates


# --- resume and overwrite -----------------------------------------------------------------


def test_an_out_holding_another_search_is_refused_in_python_words(tmp_path):
    out = tmp_path / "run"
    bitscout.search(MODEL, _data(), SPACE, strategy="random", trials=2, out=out)
    err = _python_error(strategy="tpe", trials=2, out=out)
    assert err.key == "out" and "sampler" in err.rule
    assert "overwrite=True" in err.rule and "resume=True" in err.rule
    assert "--out" not in str(err) and "--study" not in str(err)


def test_overwrite_starts_afresh_and_resume_is_checked(tmp_path, caplog):
    out = tmp_path / "run"
    bitscout.search(MODEL, _data(), SPACE, strategy="random", trials=3, out=out)
    with pytest.raises(ConfigError, match="out: out= holds study 'bitscout' with 3 trials"):
        bitscout.search(MODEL, _data(), SPACE, strategy="random", trials=3, out=out,
                        resume=False)  # fmt: skip
    fresh = bitscout.search(MODEL, _data(), SPACE, strategy="tpe", trials=2, out=out,
                            overwrite=True)  # fmt: skip
    assert len(fresh.trials) == 2 and fresh.summary["sampler"] == "tpe"
    with caplog.at_level(logging.INFO, logger="bitscout"):
        resumed = bitscout.search(MODEL, _data(), SPACE, strategy="tpe", trials=4, out=out,
                                  resume=True)  # fmt: skip
    assert len(resumed.trials) == 4
    said = [r.getMessage() for r in caplog.records if "already in the store" in r.getMessage()]
    assert said == [
        "searching 4 candidates with optuna/tpe (seed 0); 2 trials already in the store"
    ]
    with pytest.raises(ConfigError, match="resume: out= holds no study to resume"):
        bitscout.search(MODEL, _data(), SPACE, out=tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="trials: must be an integer >= 1"):
        bitscout.search(MODEL, _data(), SPACE, out=out, overwrite=True, trials=0)
    assert (
        len(bitscout.search(MODEL, _data(), SPACE, strategy="tpe", trials=4, out=out).trials) == 4
    )
    with pytest.raises(ConfigError, match="overwrite: conflicts with resume=True"):
        bitscout.search(MODEL, _data(), SPACE, out=out, resume=True, overwrite=True)
    with pytest.raises(ConfigError, match=r"overwrite: .*needs out="):
        bitscout.search(MODEL, _data(), SPACE, overwrite=True)


# --- quiet by default; lines through logging ----------------------------------------------


def test_a_default_search_prints_nothing(tmp_path, capsys):
    capsys.readouterr()
    bitscout.search(MODEL, _data(), SPACE, strategy="bruteforce")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_show_prints_and_the_log_gets_the_same_lines(capsys, caplog):
    capsys.readouterr()
    bitscout.search(MODEL, _data(), SPACE, strategy="bruteforce", show=True)
    shown = capsys.readouterr().out
    assert "searching 4 candidates" in shown and "best distinct configs" in shown
    with caplog.at_level(logging.INFO, logger="bitscout"):
        bitscout.search(MODEL, _data(), SPACE, strategy="bruteforce")
    assert capsys.readouterr().out == ""
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "bitscout")
    assert "searching 4 candidates" in logged and "best distinct configs" in logged


def test_nsgaii_with_fewer_trials_than_its_population_says_it_is_random(caplog):
    with caplog.at_level(logging.INFO, logger="bitscout"):
        bitscout.search(MODEL, _data(), BIG, strategy="nsgaii", trials=5)
    notes = [r.getMessage() for r in caplog.records if "random search" in r.getMessage()]
    assert notes == [
        "note: nsgaii with 5 trials, fewer than its population of 50, is random search (its "
        "first generation is random)"
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bitscout"):
        bitscout.search(MODEL, _data(), SPACE, strategy="tpe", trials=5)
    assert not [r for r in caplog.records if "random search" in r.getMessage()]


# --- loss_fn ------------------------------------------------------------------------------


def test_a_loss_fn_search_minimizes_that_loss_says_so_and_claims_no_unit(caplog):
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randn(60, 3, generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.INFO, logger="bitscout"):
        result = bitscout.search(MODEL, (x, y), SPACE, strategy="bruteforce", loss_fn=F.mse_loss)
    assert result.summary["metric_units"]["loss"] == ""  # an MSE is not in nats
    assert any("loss_fn" in r.getMessage() for r in caplog.records)
    best = result.trials.loc[result.trials["loss"].idxmin()]
    assert result.best.metrics["loss"] == best["loss"]  # the loss, minimized
    assert (
        bitscout.search(MODEL, _data(), SPACE, strategy="bruteforce").summary["metric_units"][
            "loss"
        ]
        == "nats"
    )
