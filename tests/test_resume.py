"""A resume never mixes measurements (issue 20, item 4): a study resumed with anything that
changes what a candidate measures is refused in one line naming it, and a resume that only
changes the ranking (objective, constraints) recomputes every trial's objective, feasibility,
reason and the winners."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bitscout
from bitscout.errors import ConfigError


class Scaled(nn.Module):
    """Its forward reads a plain attribute: the same weights, another behaviour."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 2)
        self.flip = False

    def forward(self, x):
        out = self.fc2(self.act(self.fc1(x)))
        return -out if self.flip else out


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    return x, (x[:, 0] > 0).long()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return bitscout.train(Scaled(), _data(), bitscout.TrainOptions(epochs=30, learning_rate=1e-2))


def _layer(weight: list[int], bias: list[int] | None = None) -> dict:
    return {"config": {"name": ["integer"], "data_in_width": [8], "weight_width": weight,
                       "bias_width": bias or [8]}}  # fmt: skip


SPACE = {
    "setup": {"by": "name"},
    "seed": {"default": {"config": {"name": ["NA"]}}, "fc1": _layer([2, 8]), "fc2": _layer([2, 8])},
}


def _search(model: nn.Module, out, **kw):
    kw.setdefault("trials", 3)
    return bitscout.search(
        model, _data(), kw.pop("space", SPACE), seed=1, out=out, quiet=True, **kw
    )


def _refused(model: nn.Module, out, named: str, **kw) -> str:
    """A resume of the study in `out` with `kw` is refused naming `named`, the study intact."""
    before = (out / "study.journal").read_bytes()
    with pytest.raises(ConfigError) as err:
        _search(model, out, trials=6, **kw)
    message = str(err.value)
    assert named in message and "\n" not in message, message
    assert (out / "study.journal").read_bytes() == before
    return message


def test_the_same_search_resumes(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out, metrics={"m": lambda mdl, d: 1.0}, loss_fn=F.cross_entropy)
    again = _search(model, out, metrics={"m": lambda mdl, d: 1.0}, loss_fn=F.cross_entropy,
                    trials=4)  # fmt: skip
    assert len(again.trials) == 4


def test_another_loss_fn_is_refused(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out, loss_fn=lambda o, t: F.cross_entropy(o, t))
    _refused(model, out, "loss_fn", loss_fn=lambda o, t: 100 * F.cross_entropy(o, t))
    _refused(model, out, "loss_fn", loss_fn=lambda o, t: F.nll_loss(o, t))  # another name read
    _refused(model, out, "loss_fn", loss_fn=None)


def test_another_metric_function_under_the_same_name_is_refused(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out, metrics={"m": lambda mdl, d: 1.0}, objective={"m": 1.0})
    message = _refused(model, out, "metrics['m']", metrics={"m": lambda mdl, d: 50.0},
                       objective={"m": 1.0})  # fmt: skip
    assert "<lambda>" in message  # the user's function, not bitscout's wrapper
    scale = 2.0

    def closure(mdl, d):
        return scale

    _refused(model, out, "metrics['m']", metrics={"m": closure}, objective={"m": 1.0})


def test_a_model_with_other_behaviour_and_the_same_weights_is_refused(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out)
    flipped = copy.deepcopy(model)
    flipped.flip = True  # accuracy falls from about 0.95 to about 0.05
    _refused(flipped, out, "model_code['.']['attributes']['flip']")
    swapped = copy.deepcopy(model)
    swapped.act = nn.Tanh()
    _refused(swapped, out, "model_code['act']['class']")
    buffered = copy.deepcopy(model)
    buffered.register_buffer("offset", torch.zeros(2), persistent=False)  # not in state_dict
    _refused(buffered, out, "checkpoint_sha256")


def test_a_model_whose_forward_changed_is_refused(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out)

    class Edited(Scaled):  # the same name, module and weights; another forward
        def forward(self, x):
            return self.fc2(self.act(self.fc1(x * 0.5)))

    Edited.__qualname__, Edited.__module__ = Scaled.__qualname__, Scaled.__module__
    other = copy.deepcopy(model)
    other.__class__ = Edited
    _refused(other, out, "model_code['.']['code']")


def test_a_one_choice_field_changed_is_refused(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out)
    space = json.loads(json.dumps(SPACE))
    space["seed"]["fc1"]["config"]["bias_width"] = [2]
    message = _refused(model, out, "space['fc1.bias_width']", space=space)
    assert "[8]" in message and "[2]" in message


def test_chunked_switched_on_a_brute_force_is_refused(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out, strategy="bruteforce", trials=4)
    _refused(model, out, "chunked", strategy="bruteforce", chunked=True)
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4  # every candidate still there


def test_a_study_that_did_not_record_a_key_is_refused_naming_it(model, tmp_path):
    """An earlier bitscout's study (its fingerprint in the study's user attrs, no companion)
    that lacks a key: a difference, not a pass."""
    import optuna

    from bitscout.study.store.storage import FINGERPRINT_STUDY, open_storage

    out = tmp_path / "run"
    _search(model, out)
    storage = open_storage(str(out / "study.journal"))
    companion = optuna.load_study(study_name=FINGERPRINT_STUDY.format(name="bitscout"),
                                  storage=storage)  # fmt: skip
    recorded = companion.trials[0].user_attrs["fingerprint"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    study = optuna.create_study(storage=open_storage(str(legacy / "study.journal")),
                                study_name="bitscout", direction="maximize")  # fmt: skip
    for key, value in recorded.items():
        if key != "loss_fn":
            study.set_user_attr(key, value)
    with pytest.raises(ConfigError, match="did not record 'loss_fn'"):
        _search(model, legacy, trials=3)


def test_a_relaxed_constraint_makes_the_best_feasible(model, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="feasible"):  # no best: none passes
        _search(model, out, constraints=["accuracy >= 0.9999"], trials=4).best_value  # noqa: B018
    result = _search(model, out, constraints=["accuracy >= 0.5"], trials=4)
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["state"] == "complete").all() and trials["reason"].isna().all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["feasible"] == 4 and summary["infeasible"] == 0
    assert result.best_value == pytest.approx(trials["accuracy"].max())
    # tightened again: each trial is judged by the new constraint, with its reason
    cut = float(trials["accuracy"].max())
    _search(model, out, constraints=[f"accuracy >= {cut}"], trials=4)
    trials = pd.read_csv(out / "trials.csv")
    below = trials["accuracy"] < cut
    assert (trials.loc[below, "state"] == "infeasible").all()
    assert trials.loc[below, "reason"].str.contains(f"< {cut}").all()
    assert (trials.loc[~below, "state"] == "complete").all()


def test_a_new_objective_reranks_every_trial(model, tmp_path):
    out = tmp_path / "run"
    _search(model, out, strategy="bruteforce")
    _search(
        model, out, strategy="bruteforce", objective={"accuracy": 1.0, "average_bitwidth": -0.1}
    )
    trials = pd.read_csv(out / "trials.csv")
    expected = trials["accuracy"] - 0.1 * trials["average_bitwidth"]
    assert trials["objective"].to_numpy() == pytest.approx(expected.to_numpy())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["objective"][0] == pytest.approx(expected.max())
