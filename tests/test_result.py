"""`SearchResult`: its repr, Optuna's `best_params` / `best_value`, and `SearchResult.load`
rebuilding it from a run directory through the one reader (results/rundir.py)."""

import json
import re

import pandas as pd
import pytest
import torch
from torch import nn

import bitscout
from bitscout.errors import ConfigError
from bitscout.quant.plan import parse_plan
from bitscout.results.rundir import file_sha256, load_run
from bitscout.study.result import SearchResult


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


SPACE = {"seed": {"default": {"config": {"name": ["integer"], "weight_width": [2, 4, 8],
                                         "data_in_width": [8], "bias_width": [8]}}}}  # fmt: skip
OBJECTIVE = {"accuracy": 2.0, "average_bitwidth": -0.1}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


@pytest.fixture(scope="module")
def searched(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> SearchResult:
    out = tmp_path_factory.mktemp("run") / "run"
    return bitscout.search(model, _data(), SPACE, objective=OBJECTIVE, strategy="bruteforce",
                           out=out, quiet=True)  # fmt: skip


def _by_hand(result: SearchResult) -> tuple[dict, float]:
    """The best config and value from trials.csv's columns, computed here."""
    frame = result.trials
    dims = [c for c in frame.columns if c.endswith("_width")]
    score = 2.0 * frame["accuracy"] - 0.1 * frame["average_bitwidth"]
    best = frame.loc[score.idxmax()]  # idxmax keeps the first of ties, as bitscout does
    return {d: best[d] for d in dims}, float(score.max())


def test_best_params_and_value_match_the_trials(searched: SearchResult) -> None:
    params, value = _by_hand(searched)
    assert searched.best_params == params
    assert searched.best_value == pytest.approx(value)
    assert isinstance(searched.best_value, float)


def test_repr_names_best_objective_trials_and_out(searched: SearchResult) -> None:
    text = repr(searched)
    assert text.startswith(f"SearchResult(best=trial {searched.best.trial} {{")
    for dim, choice in searched.best_params.items():
        assert f"{dim}={choice!r}" in text
    assert f"objective={searched.best_value:.6g}" in text
    assert f"trials={len(searched.trials)}" in text and str(searched.out) in text


def test_load_rebuilds_the_result_without_running(searched: SearchResult, model) -> None:
    loaded = SearchResult.load(searched.out, model=model)
    assert loaded.study is None
    assert loaded.best == searched.best and loaded.pareto == searched.pareto
    assert loaded.best_params == searched.best_params
    assert loaded.best_value == searched.best_value
    columns = ["number", "state", *searched.best_params, "accuracy", "average_bitwidth"]
    pd.testing.assert_frame_equal(loaded.trials[columns], searched.trials[columns],
                                  check_dtype=False)  # fmt: skip
    x, _ = _data()
    torch.testing.assert_close(loaded.quantized_model()(x), searched.quantized_model()(x))
    assert repr(loaded) == repr(searched)


def test_load_without_a_model_says_so_on_quantized_model(searched: SearchResult) -> None:
    loaded = SearchResult.load(searched.out)
    assert loaded.best_params == searched.best_params  # everything else is there
    with pytest.raises(ConfigError, match=re.escape("SearchResult.load(out, model=...)")):
        loaded.quantized_model()


def test_load_of_no_run_directory(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not a finished search directory"):
        SearchResult.load(tmp_path)


def test_repr_says_why_there_is_no_best(model: nn.Module) -> None:
    result = bitscout.search(model, _data(), SPACE, objective=OBJECTIVE, strategy="bruteforce",
                             constraints=["average_bitwidth <= 1"], quiet=True)  # fmt: skip
    assert result.best is None
    text = repr(result)
    assert f"best=None: none of {len(result.trials)} evaluated trials is feasible" in text
    assert "under average_bitwidth <= 1" in text
    with pytest.raises(ValueError, match="average_bitwidth <= 1"):
        _ = result.best_value


def test_multi_objective_has_no_single_best_as_in_optuna(model: nn.Module) -> None:
    result = bitscout.search(model, _data(), SPACE, objective=["accuracy", "average_bitwidth"],
                             strategy="bruteforce", quiet=True)  # fmt: skip
    assert result.pareto and result.best is not None
    for name in ("best_params", "best_value"):
        with pytest.raises(RuntimeError, match="pareto"):
            getattr(result, name)
    assert f"pareto={len(result.pareto)}" in repr(result)


def _checkpointed_run(searched: SearchResult, model: nn.Module, tmp_path) -> tuple:
    """The run directory as a CLI run leaves it: summary.json records the checkpoint."""
    ckpt = tmp_path / "float.pt"
    torch.save(model.state_dict(), ckpt)
    summary_path = searched.out / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["model_source"] = {"path": str(ckpt), "sha256": file_sha256(ckpt)}
    run = tmp_path / "run"
    run.mkdir()
    for name in ("trials.csv", "best.toml"):
        (run / name).write_bytes((searched.out / name).read_bytes())
    (run / "summary.json").write_text(json.dumps(summary))
    return run, ckpt


def test_load_puts_the_recorded_checkpoint_into_the_architecture(searched, model, tmp_path):
    run, _ = _checkpointed_run(searched, model, tmp_path)
    torch.manual_seed(1)
    fresh = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))  # other weights
    loaded = SearchResult.load(run, model=fresh)
    x, _ = _data()
    torch.testing.assert_close(loaded.float_model()(x), model(x))
    assert not torch.equal(fresh(x), model(x))  # the caller's model is left alone


def test_a_checkpoint_that_changed_since_the_search_is_refused(searched, model, tmp_path):
    run, ckpt = _checkpointed_run(searched, model, tmp_path)
    changed = {k: v + 1 for k, v in model.state_dict().items()}
    torch.save(changed, ckpt)
    with pytest.raises(ConfigError, match="differs from the checkpoint the search used"):
        SearchResult.load(run, model=model)
    assert load_run(run).summary["model_source"]["path"] == str(ckpt)


def test_run_plan_of_a_trial_is_what_the_result_gives(searched: SearchResult) -> None:
    run = load_run(searched.out)
    number = int(searched.trials["number"].iloc[-1])
    assert run.trial_plan(number) == searched.plan(number)
    with pytest.raises(ConfigError, match="no evaluated trial"):
        run.trial_plan(10_000)


def test_summary_maps_each_public_layer_name_to_its_module_path(tmp_path) -> None:
    """One name per layer: trials.csv's and best.toml's (the fx name) is the public one;
    summary.json shows once which module path each stands for."""
    torch.manual_seed(0)
    nested = nn.Sequential(nn.Sequential(nn.Linear(6, 8), nn.ReLU()), nn.Linear(8, 2))
    result = bitscout.search(nested, _data(), SPACE, objective=OBJECTIVE, strategy="bruteforce",
                             out=tmp_path / "run", quiet=True)  # fmt: skip
    names = json.loads((tmp_path / "run" / "summary.json").read_text())["layer_names"]
    assert names == {"0_0": "0.0", "1": "1"}
    assert {d.partition("/")[0] for d in result.summary["dimensions"]} == set(names)
    # the module path is an alias: a plan keyed by it quantizes the same layer
    by_path = {"0.0": {"config": {"name": "integer", "weight_width": 2, "data_in_width": 8,
                                  "bias_width": 8}}}  # fmt: skip
    by_name = {"0_0": by_path["0.0"]}
    x, _ = _data()
    plans = [bitscout.quantize_model(nested, parse_plan(p)) for p in (by_path, by_name)]
    torch.testing.assert_close(plans[0](x), plans[1](x))
    assert not torch.equal(plans[0](x), nested(x))
    aliased = {k.replace("0_0/", "0.0/"): v for k, v in result.best_params.items()}
    torch.testing.assert_close(result.quantized_model(aliased)(x), result.quantized_model()(x))
