"""Fine-tuning the winners (issue 21, item 2): `bitscout.finetune` trains a config as a QAT
search trains that candidate (the same weights), its model.pt quantizes to the trained
candidate bit for bit, its metrics agree with a reference computed here, and
`SearchResult.finetune` chooses, writes and reports the configs."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bitscout
from bitscout.errors import ConfigError
from bitscout.evaluate import qat
from bitscout.quant import quantize_model
from bitscout.results.report_md import FINETUNED
from bitscout.study.finetune import KIND
from bitscout.zoo.models import build_model

TRAIN = {"epochs": 2, "lr": 3e-3, "batch_size": 32}
SEED = 7


def _layer(weights: list[int]) -> dict:
    return {"config": {"name": ["integer"], "data_in_width": [8], "data_in_frac_width": [4],
                       "weight_width": weights, "weight_frac_width": [2], "bias_width": [8],
                       "bias_frac_width": [4]}}  # fmt: skip


SPACE = {"setup": {"by": "name"}, "seed": {"default": _layer([2, 4])}}  # 8 candidates


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    return {"train": (x[:600], y[:600]), "val": (x[600:900], y[600:900]),
            "test": (x[900:1200], y[900:1200])}  # fmt: skip


@pytest.fixture(scope="module")
def model(digits) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model("mlp")
    return bitscout.train(net, digits["train"], bitscout.TrainOptions(epochs=5)).eval()


class Spy:
    """Every model `Trainer.train` trained, by the candidate's identity: a copy of its state."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trained: dict[str, list[dict[str, torch.Tensor]]] = {}
        original = qat.Trainer.train

        def train(trainer, candidate, identity, on_epoch=None):
            epochs = original(trainer, candidate, identity, on_epoch)
            state = {k: v.detach().clone() for k, v in candidate.state_dict().items()}
            self.trained.setdefault(identity, []).append(state)
            return epochs

        monkeypatch.setattr(qat.Trainer, "train", train)


@pytest.fixture(scope="module")
def qat_search(digits, model, tmp_path_factory):
    """A QAT brute force of the 3 candidates, and what each candidate trained to."""
    with pytest.MonkeyPatch.context() as mp:
        spy = Spy(mp)
        result = bitscout.search(
            model, digits["val"], SPACE, strategy="bruteforce", seed=SEED, train=TRAIN,
            train_data=digits["train"], test_data=digits["test"],
            out=tmp_path_factory.mktemp("qat") / "run",
        )  # fmt: skip
    return result, spy.trained


def _reference(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy and mean cross-entropy, written out in numpy."""
    with torch.no_grad():
        logits = net(x).double().numpy()
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    labels = y.numpy()
    return {"accuracy": float(np.mean(logits.argmax(1) == labels)),
            "loss": float(-log_p[np.arange(len(labels)), labels].mean())}  # fmt: skip


def test_a_config_trains_to_the_weights_the_qat_search_trained_it_to(digits, model, qat_search,
                                                                     monkeypatch, tmp_path):  # fmt: skip
    result, searched = qat_search
    spy = Spy(monkeypatch)
    tuned = bitscout.finetune(model, digits["val"], result.best.plan, train_data=digits["train"],
                              test_data=digits["test"], train=TRAIN, seed=SEED,
                              out=tmp_path / "ft")  # fmt: skip
    ((identity, [mine]),) = spy.trained.items()
    assert searched[identity]  # (trained again for the test split: the same weights)
    for theirs in searched[identity]:
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # the figures of the search's trial are the fine-tuned model's, to the last bit
    assert tuned.after["accuracy"] == result.best.metrics["accuracy"]
    assert tuned.after["loss"] == result.best.metrics["loss"]
    assert tuned.epochs == TRAIN["epochs"] and tuned.settings.seed == SEED
    # and the latent weights are the fine-tuned float model's
    state = tuned.model.state_dict()
    assert all(torch.equal(state[k], mine[k]) for k in mine)


def test_model_pt_quantizes_to_the_trained_candidate_bit_for_bit(digits, model, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    spy = Spy(monkeypatch)
    plan = {"by": "name", "default": {"config": {"name": "integer", "data_in_width": 8,
            "data_in_frac_width": 4, "weight_width": 2, "weight_frac_width": 2,
            "bias_width": 8, "bias_frac_width": 4}}}  # fmt: skip
    out = tmp_path / "ft"
    tuned = bitscout.finetune(model, digits["val"], {"passes": {"quantize": plan}},
                              train_data=digits["train"], test_data=digits["test"],
                              train={"epochs": 3}, out=out)  # fmt: skip
    assert {p.name for p in out.iterdir()} == {"model.pt", "best.toml", "metrics.json"}
    fresh = build_model("mlp")
    fresh.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    best = tomllib.loads((out / "best.toml").read_text())["passes"]["quantize"]
    candidate = quantize_model(fresh.eval(), best).eval()
    ((trained,),) = spy.trained.values()
    assert all(torch.equal(candidate.state_dict()[k], v) for k, v in trained.items())
    x, y = digits["val"]
    # the trained weights differ from the float ones: training happened
    assert not torch.equal(fresh.state_dict()["seq_blocks.0.weight"],
                           model.state_dict()["seq_blocks.0.weight"])  # fmt: skip
    # the figures against a reference written here, on the candidate rebuilt from the files
    want = _reference(candidate, x, y)
    assert tuned.after["accuracy"] == want["accuracy"]
    assert tuned.after["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert tuned.test is not None
    assert tuned.test["accuracy"] == _reference(candidate, *digits["test"])["accuracy"]
    before = _reference(quantize_model(model, best).eval(), x, y)
    assert tuned.before["accuracy"] == before["accuracy"]
    assert tuned.after["accuracy"] > tuned.before["accuracy"]  # 2-bit weights recover
    record = json.loads((out / "metrics.json").read_text())
    assert record["kind"] == KIND == FINETUNED
    assert record["before"] == tuned.before and record["after"] == tuned.after
    assert record["train"]["epochs"] == 3 and record["epochs"] == 3 and record["seed"] == 0


def test_a_loss_fn_is_trained_on_and_reported(digits, model):
    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y, label_smoothing=0.1)

    plan = {"by": "name", "default": {"config": {"name": "integer", "weight_width": 4}}}
    tuned = bitscout.finetune(model, digits["val"], plan, train_data=digits["train"],
                              train={"epochs": 1}, loss_fn=loss_fn)  # fmt: skip
    x, y = digits["val"]
    candidate = quantize_model(tuned.model, plan).eval()
    with torch.no_grad():
        want = float(loss_fn(candidate(x), y))
    assert tuned.after["loss"] == pytest.approx(want, rel=1e-5)
    assert tuned.out is None and tuned.test is None


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"train": {"epochs": 0}}, "epochs"),
        ({"train": {"optimizer": "lbfgs"}}, "optimizer"),
        ({"train": {"lr": float("nan")}}, "lr"),
        ({"train_data": None}, "train_data"),
        ({"config": {"by": "size"}}, "by"),
        ({"config": {"passes": {}}}, "config"),
    ],
)
def test_bad_arguments_are_refused_naming_them(digits, model, kwargs, key):
    args = {"config": {"by": "name", "default": {"config": {"name": "integer"}}},
            "train_data": digits["train"], **kwargs}  # fmt: skip
    config = args.pop("config")
    with pytest.raises(ConfigError) as err:
        bitscout.finetune(model, digits["val"], config, **args)
    assert key in err.value.key


def test_search_result_fine_tunes_its_top_configs_into_the_run(digits, qat_search):
    result, _ = qat_search
    found = result.finetune(top=2, epochs=1)
    ranked = [int(n) for n in result.trials.sort_values("objective", ascending=False,
                                                       kind="stable")["number"][:2]]  # fmt: skip
    assert [f.trial for f in found] == ranked
    assert all(f.epochs == 1 and f.settings.batch_size == TRAIN["batch_size"] for f in found)
    report = (result.out / "report.md").read_text()
    assert "## Fine-tuned" in report
    for f in found:
        assert f.out == result.out / "finetune" / f"trial_{f.trial}"
        record = json.loads((f.out / "metrics.json").read_text())
        assert record["run"] == str(result.out.resolve()) and record["trial"] == f.trial
        assert f"| {f.trial} | accuracy | {f.before['accuracy']:.6g} | " in report
        assert f.test is not None  # the search's test split
    with pytest.raises(ConfigError, match="exclude"):
        result.finetune(trial=0, top=2)
    with pytest.raises(ConfigError) as err:
        result.finetune(lr=-1.0)
    assert err.value.key == "lr"
    with pytest.raises(ConfigError) as err:
        result.finetune(trial=99)
    assert err.value.key == "trial"


def test_a_post_training_search_needs_its_training_split(digits, model):
    result = bitscout.search(model, digits["val"], SPACE, strategy="bruteforce")
    with pytest.raises(ConfigError) as err:
        result.finetune()
    assert err.value.key == "train_data"
    (found,) = result.finetune(epochs=1, train_data=digits["train"])
    assert found.trial == result.best.trial and found.out is None
    assert found.before["accuracy"] == result.best.metrics["accuracy"]  # PTQ: the same figure


def test_python_export_takes_the_fine_tuned_directory(digits, model, tmp_path):
    plan = {"by": "name", "default": {"config": {"name": "integer", "weight_width": 3,
            "weight_frac_width": 2, "data_in_width": 8, "data_in_frac_width": 4}}}  # fmt: skip
    out = tmp_path / "ft"
    tuned = bitscout.finetune(model, digits["val"], plan, train_data=digits["train"],
                              train={"epochs": 1}, out=out)  # fmt: skip
    found = bitscout.export(out, to="checkpoint", model=build_model("mlp"), data=digits["val"])
    assert found.out == out / "export" and found.label == "fine-tuned ft"
    exported = torch.load(out / "export" / "quantized.pt", weights_only=True)
    weight = tuned.model.state_dict()["seq_blocks.2.weight"]
    grid = torch.clamp(torch.round(weight * 4), -4, 3) / 4  # ap_fixed<3,1>: half even, saturate
    assert torch.equal(exported["seq_blocks.2.weight"], grid)
    assert not torch.equal(
        grid, torch.clamp(torch.round(model.seq_blocks[2].weight * 4), -4, 3) / 4
    )
    with pytest.raises(ConfigError, match="fine-tuned"):
        bitscout.export(out, to="checkpoint", trial=1, model=build_model("mlp"))
    (out / "model.pt").write_bytes((out / "model.pt").read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        bitscout.export(out, to="checkpoint", model=build_model("mlp"))
