"""`--to qonnx` through `bitscout export` and `bitscout.export`: model.onnx beside the other
targets, `--verify` running QONNX's executor besides hls4ml's emulation, a QONNX-only export of
a format hls4ml's types cannot hold, and a format QONNX cannot express refused in one line
before anything is written."""

import json
from pathlib import Path

import pytest
from cli_support import digits_doc, error_problems, run_cli, write_config
from hls4ml_support import need_hls4ml

from bitscout.cli.main import main


def _run(root: Path, **layer: list) -> Path:
    config = write_config(root / "digits.toml", _doc(**layer))
    assert main(["search", str(config), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def _doc(**layer: list) -> dict:
    doc = digits_doc(**layer)
    doc["search"]["strategy"]["setup"] = {"n_trials": 4, "sampler": "random", "seed": 0}
    return doc


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("qonnx_run"), data_in_width=[6, 8],
                data_in_frac_width=[3], weight_width=[3, 4], weight_frac_width=[2],
                bias_width=[8], bias_frac_width=[5])  # fmt: skip


def test_export_to_hls4ml_and_qonnx_verifies_both(fixed_run, capsys):
    need_hls4ml()
    out = fixed_run / "both"
    argv = ["export", str(fixed_run), "--to", "hls4ml,qonnx", "--verify", "--rows", "120",
            "--out", str(out)]  # fmt: skip
    outcome = run_cli(argv, capsys)
    assert outcome.rc == 0, outcome.err
    found = json.loads((out / "verify.json").read_text())
    assert found["max_logit_difference"] == 0 and found["top_class_agreement"] == 1.0
    q = found["qonnx"]
    assert q["rows"] == 120 and q["differing_values"] == 0 and q["max_logit_difference"] == 0
    assert q["nodes"]["Quant"] >= 6  # input and weight of each of 3 layers, and biases
    assert (out / "model.onnx").is_file() and (out / "precision.json").is_file()
    assert "QONNX 1.0.0 executor, 120 rows: 0 values differ" in outcome.out


def _qonnx_only(run: Path, out: Path, capsys: pytest.CaptureFixture) -> dict:
    argv = ["export", str(run), "--to", "qonnx", "--verify", "--rows", "50", "--out", str(out)]
    outcome = run_cli(argv, capsys)
    assert outcome.rc == 0, outcome.err
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "verify.json"]
    found = json.loads((out / "verify.json").read_text())
    assert set(found) == {"qonnx"}  # no hls4ml emulation without its target
    return found["qonnx"]


def test_qonnx_alone(fixed_run, capsys):
    found = _qonnx_only(fixed_run, fixed_run / "q", capsys)
    assert found["differing_values"] == 0 and found["rows"] == 50


def test_a_minifloat_run_exports_to_qonnx_only(tmp_path, capsys):
    """hls4ml's fixed-point types cannot hold minifloats (no precision.json); QONNX can."""
    run = _run(tmp_path, name=["minifloat_ieee"], data_in_width=[8],
               data_in_exponent_width=[4], weight_width=[8], weight_exponent_width=[4])  # fmt: skip
    found = _qonnx_only(run, tmp_path / "q", capsys)
    assert found["differing_values"] == 0 and found["nodes"]["FloatQuant"] >= 3


def test_a_format_qonnx_cannot_express_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = _run(tmp_path, data_in_width=[8], data_in_frac_width=[4], weight_width=[4],
               weight_frac_width=[2], overflow=["wrap"])  # fmt: skip
    out = tmp_path / "refused"
    outcome = run_cli(["export", str(run), "--to", "qonnx", "--out", str(out)], capsys)
    assert not error_problems(outcome), error_problems(outcome)
    assert "wrap" in outcome.err and "seq_blocks" in outcome.err
    assert not out.exists()
