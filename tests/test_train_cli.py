"""Training, checkpoints and the train/quantize commands, on the bundled digits data."""

import json
from pathlib import Path

import pytest
import torch

from bitscout import quantize_model
from bitscout.cli import main
from bitscout.cli.build import load_data, make_model
from bitscout.cli.config import load_config
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import evaluate_model
from bitscout.zoo.models import build_model
from bitscout.zoo.train import load_checkpoint

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    assert main(["train", str(EXAMPLE), "--out", str(out)]) == 0
    return out


def test_train_writes_checkpoint_and_info(trained):
    info = json.loads((trained / "train.json").read_text())
    assert info["model"] == "mlp" and info["dataset"] == "digits" and info["seed"] == 0
    assert info["epochs"] == load_config(EXAMPLE).max_epochs
    state = torch.load(trained / "model.pt", weights_only=True)
    assert set(state) == set(build_model("mlp").state_dict())


def test_digits_accuracy_and_8bit_within_one_point(trained):
    cfg = load_config(EXAMPLE)
    data = load_data(cfg)
    model = load_checkpoint(make_model(cfg, data), trained / "model.pt")
    float_acc = evaluate_model(model, data.x_val, data.y_val)["accuracy"]
    assert float_acc >= 0.95
    quantized = quantize_model(model, cfg.quantize)
    assert sum(type(m).__name__ == "QuantLinear" for m in quantized.modules()) == 3
    quant_acc = evaluate_model(quantized, data.x_val, data.y_val)["accuracy"]
    assert abs(quant_acc - float_acc) <= 0.01
    # info in train.json agrees with an evaluation done here
    info = json.loads((trained / "train.json").read_text())
    assert info["val_accuracy"] == pytest.approx(float_acc)


def test_training_is_reproducible(tmp_path, trained):
    assert main(["train", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    a = torch.load(trained / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_quantize_prints_float_and_quantized(trained, capsys):
    assert main(["quantize", str(EXAMPLE), "--load", str(trained / "model.pt")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "quantized" in out and "float" in out


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_model("jsc-tiny").state_dict(), ckpt)
    assert main(["quantize", str(EXAMPLE), "--load", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint does not fit the configured model" in err
    assert "\n" not in err and "Traceback" not in err


def test_pickled_code_is_refused(tmp_path):
    ckpt = tmp_path / "evil.pt"
    torch.save({"weights": build_model("mlp")}, ckpt)  # a whole module needs unpickling code
    with pytest.raises(ConfigError, match="not a loadable weights-only checkpoint"):
        load_checkpoint(build_model("mlp"), ckpt)


def test_missing_checkpoint(capsys):
    assert main(["quantize", str(EXAMPLE), "--load", "missing.pt"]) == 2
    assert "missing.pt: checkpoint file not found" in capsys.readouterr().err


def test_bad_config_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "mlp"\nbatch_size = 0\n')
    assert main(["train", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size: must be an integer >= 1, got 0" in err
    assert not (tmp_path / "out").exists()
