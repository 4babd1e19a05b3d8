"""The export to hls4ml and the quantized artifacts. Numerics are checked against hls4ml's own
C++ emulation (compiled with g++), the configuration against hls4ml's own parser, and the
artifacts against the quantized model."""

from __future__ import annotations

import copy
import json
import multiprocessing
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import base_doc, digits_doc, edit, run_cli, write_config
from hls4ml_support import (
    digits_mlp,
    digits_plans,
    jsc_plans,
    jsc_tiny,
    jsc_toy,
    layer,
    need_hls4ml,
)

from bitscout.cli import main
from bitscout.errors import ConfigError
from bitscout.export import codes, grid_state_dict, hardware, precision, to_hls4ml, verify
from bitscout.quant import quantize_model

ROWS = 2000
AP = {"half_even": "AP_RND_CONV", "half_up": "AP_RND", "floor": "AP_TRN"}


def _rows(features: int, seed: int) -> torch.Tensor:
    return torch.randn(ROWS, features, generator=torch.Generator().manual_seed(seed)) * 2


def _verify(job: tuple[str, str, dict, str]) -> tuple[str, dict]:
    """One compile in a worker process (spawned: fresh torch, no inherited threads)."""
    name, model_name, plan, project = job
    model = {"jsc-tiny": jsc_tiny, "jsc-toy": jsc_toy, "mlp": digits_mlp}[model_name]()
    x = _rows(64 if model_name == "mlp" else 16, 7)
    return name, verify(model, plan, x, Path(project))


@pytest.fixture(scope="module")
def verified(tmp_path_factory) -> dict[str, dict]:
    need_hls4ml()
    root = tmp_path_factory.mktemp("hls4ml")
    jobs = [(f"jsc-tiny {k}", "jsc-tiny", v, str(root / f"j{i}"))
            for i, (k, v) in enumerate(jsc_plans().items())]  # fmt: skip
    jobs += [(f"mlp {k}", "mlp", v, str(root / f"m{i}")) for i, (k, v) in enumerate(digits_plans().items())]  # fmt: skip
    jobs += [(f"jsc-toy {k}", "jsc-toy", v, str(root / f"t{i}")) for i, (k, v) in enumerate(TOY_PLANS.items())]  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        return dict(pool.map(_verify, jobs))


# jsc-toy: BatchNorm between every pair of quantized layers, and at the output
TOY_PLANS = {
    "8-bit": {"by": "type", "linear": {"config": layer((8, 4), (6, 4), (8, 4))}},
    "narrow": {"by": "type", "linear": {"config": layer((4, 2), (3, 2), (4, 2), "floor")}},
}
CASES = [f"jsc-tiny {k}" for k in jsc_plans()] + [f"mlp {k}" for k in digits_plans()]
CASES += [f"jsc-toy {k}" for k in TOY_PLANS]


@pytest.mark.parametrize("case", CASES)
def test_quantized_layers_equal_hls4ml_bit_for_bit(verified, case):
    found = verified[case]
    assert found["rows"] == ROWS and found["layers"]
    for entry in found["layers"]:
        assert entry["max_abs_difference"] == 0.0, entry
    # Every layer quantized, and jsc-tiny's BatchNorm scored as hls4ml computes it: exact.
    assert found["top_class_agreement"] == 1.0 and found["max_logit_difference"] == 0.0
    assert found["float_nodes"] == []


def test_configured_names_and_precisions_are_what_hls4ml_reads(tmp_path):
    need_hls4ml()
    import hls4ml

    model = jsc_tiny()
    plan = jsc_plans()["negative frac"]
    config = to_hls4ml(model, plan)
    hls = hls4ml.converters.convert_from_pytorch_model(
        model, output_dir=str(tmp_path / "p"), backend="Vivado", io_type="io_parallel",
        hls_config=copy.deepcopy(config),
    )  # fmt: skip
    names = [layer.name for layer in hls.get_layers()]
    assert names == list(config["LayerName"]) == ["x", *[f"seq_blocks_{i}" for i in range(4)]]
    dense = hls.graph["seq_blocks_2"]
    weight = dense.get_weights("weight").type.precision
    assert (weight.width, weight.integer) == (5, 7)  # frac -2: ap_fixed<5,7>
    assert str(weight.rounding_mode) == "TRN" and str(weight.saturation_mode) == "WRAP"


def test_every_rounding_and_overflow_is_spelled_out():
    model = digits_mlp()
    for name, plan in digits_plans().items():
        rounding, overflow = name.split()
        config = to_hls4ml(model, plan)["LayerName"]
        suffix = f",{AP[rounding]},{'AP_SAT' if overflow == 'saturate' else 'AP_WRAP'}>"
        assert config["seq_blocks_0"]["Precision"]["weight"] == "ap_fixed<4,1" + suffix
        assert config["seq_blocks_4"]["Precision"]["bias"] == "ap_fixed<5,3" + suffix
        assert config["x"]["Precision"]["result"] == "ap_fixed<6,4" + suffix  # layer 0's input
        assert config["seq_blocks_1"]["Precision"]["result"] == "ap_fixed<5,4" + suffix


def test_the_exact_accumulator_is_sized_from_the_formats():
    nodes = {n.name: n for n in hardware(digits_mlp(), digits_plans()["floor wrap"])}
    dense = nodes["seq_blocks_0"]
    # in <6,2> x weight <4,3>: the largest product is 32 * 8 codes = 256 of 2**-5; 64 of them
    # plus the bias's largest, 32 codes of 2**-3 = 128 of 2**-5: 16,512, a 16-bit code
    assert (dense.params["accum"].width, dense.params["accum"].frac_width) == (16, 5)
    assert dense.result == dense.params["accum"] and not dense.float_
    assert dense.fan_in == 64 and nodes["seq_blocks_1"].result.width == 5  # the next data_in


def test_batchnorm_is_stand_in_typed_and_not_float():
    model = jsc_tiny()
    plan = {"by": "name", "seq_blocks_2": {"config": layer((8, 4), (4, 2), (8, 4))}}
    report = precision(model, plan)
    assert report["float_nodes"] == []  # the input and the BatchNorm are scored in fixed point
    wide = "ap_fixed<32,16,AP_RND_CONV,AP_SAT>"
    assert report["nodes"][0]["result"]["ap_fixed"] == wide  # the BatchNorm's input
    assert report["nodes"][1]["result"]["ap_fixed"] == wide
    (dense,) = report["layers"]
    assert dense["accum"]["source"] == "computed" and dense["fan_in"] == 16
    assert dense["weight"]["scale"] == 0.25 and dense["data_in"]["integer_width"] == 4


def test_artifacts_reproduce_the_quantized_model_exactly():
    model = digits_mlp()
    plan = digits_plans()["half_up wrap"]
    x = _rows(64, 3)
    want = quantize_model(model, plan)(x)
    again = copy.deepcopy(model)
    again.load_state_dict(grid_state_dict(model, plan))  # quantized.pt's contents
    assert torch.equal(quantize_model(again, plan)(x), want)
    found = codes(model, plan)
    rebuilt = copy.deepcopy(model)
    with torch.no_grad():
        for name, path in (("seq_blocks_0", "seq_blocks.0"), ("seq_blocks_2", "seq_blocks.2"),
                           ("seq_blocks_4", "seq_blocks.4")):  # fmt: skip
            for tensor in ("weight", "bias"):
                k = found[f"{name}.{tensor}"]
                assert k.dtype == np.int32
                frac = int(found[f"{name}.{tensor}.frac_width"])
                width = int(found[f"{name}.{tensor}.width"])
                assert k.min() >= -(2 ** (width - 1)) and k.max() < 2 ** (width - 1)
                getattr(rebuilt.get_submodule(path), tensor).copy_(torch.from_numpy(k * 2.0**-frac))
    assert torch.equal(quantize_model(rebuilt, plan)(x), want)


def test_models_that_are_not_chains_are_refused():
    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + x

    with pytest.raises(ConfigError, match="one chain of module calls"):
        to_hls4ml(Residual(), {"by": "type", "linear": {"config": layer((8, 4), (8, 4), (8, 4))}})


# --- the command line --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export_run")
    doc = digits_doc(data_in_width=[6, 8], data_in_frac_width=[3], weight_width=[3, 4],
                     weight_frac_width=[3], bias_width=[8], bias_frac_width=[5])  # fmt: skip
    doc = edit(doc, "search.strategy.setup", {"n_trials": 8, "sampler": "random", "seed": 0})
    config = write_config(root / "digits.toml", doc)
    assert main(["search", str(config), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def test_export_writes_every_artifact(digits_run, capsys):
    out = digits_run / "all"
    outcome = run_cli(["export", str(digits_run), "--to", "hls4ml,checkpoint,npz", "--out",
                       str(out)], capsys)  # fmt: skip
    assert outcome.rc == 0, outcome.err
    names = {p.name for p in out.iterdir()}
    assert names >= {"hls4ml_config.yml", "hls4ml_config.json", "convert_hls4ml.py",
                     "quantized.pt", "precision.json", "codes.npz"}  # fmt: skip
    best = tomllib.loads((digits_run / "best.toml").read_text())["passes"]["quantize"]
    config = json.loads((out / "hls4ml_config.json").read_text())
    w = best["seq_blocks_2"]["config"]
    want = f"ap_fixed<{w['weight_width']},{w['weight_width'] - w['weight_frac_width']},AP_RND_CONV,AP_SAT>"
    assert config["LayerName"]["seq_blocks_2"]["Precision"]["weight"] == want
    assert "seq_blocks_4" in outcome.out and "accum" in outcome.out


def test_export_of_a_trial_and_bad_arguments(digits_run, capsys):
    outcome = run_cli(["export", str(digits_run), "--trial", "3", "--to", "npz"], capsys)
    assert outcome.rc == 0 and (digits_run / "export_trial_3" / "codes.npz").is_file()
    for argv, key in (
        (["--trial", "99", "--to", "npz"], "--trial"),
        (["--to", "verilog"], "--to"),
        (["--to", "npz", "--quant", str(digits_run / "nope.toml")], "nope.toml"),
    ):
        bad = run_cli(["export", str(digits_run), *argv], capsys)
        assert bad.rc == 2 and bad.err.count("\n") == 1 and key in bad.err, bad.err


def test_verify_reports_what_an_independent_conversion_finds(digits_run, capsys):
    need_hls4ml()
    import hls4ml

    outcome = run_cli(["export", str(digits_run), "--to", "hls4ml", "--verify"], capsys)
    assert outcome.rc == 0, outcome.err
    out = digits_run / "export"
    found = json.loads((out / "verify.json").read_text())
    assert "Hardware check (hls4ml)" in (digits_run / "report.md").read_text()
    # as a user would: the exported config and weights, converted and compiled anew
    from bitscout.cli.build import load_data, make_model
    from bitscout.cli.config import load_config

    cfg = load_config(json.loads((digits_run / "summary.json").read_text())["config"])
    data = load_data(cfg)
    model = make_model(cfg, data)
    model.load_state_dict(torch.load(out / "quantized.pt", weights_only=True))
    hls = hls4ml.converters.convert_from_pytorch_model(
        model.eval(), output_dir=str(out / "independent"), backend="Vivado",
        io_type="io_parallel", hls_config=json.loads((out / "hls4ml_config.json").read_text()),
    )  # fmt: skip
    hls.compile()
    x = data.x_val[:ROWS]
    theirs = hls.predict(np.ascontiguousarray(x.double().numpy())).reshape(len(x), -1)
    plan = tomllib.loads((digits_run / "best.toml").read_text())["passes"]["quantize"]
    mine = quantize_model(model, plan)(x).detach().numpy()
    assert found["rows"] == len(x)
    assert found["top_class_agreement"] == float(np.mean(mine.argmax(1) == theirs.argmax(1)))
    assert all(e["max_abs_difference"] == 0.0 for e in found["layers"])


def test_quantize_out_writes_the_artifacts_of_one_plan(tmp_path, capsys):
    config = write_config(tmp_path / "c.toml", base_doc())
    assert main(["train", str(config), "--out", str(tmp_path / "t")]) == 0
    quant = tmp_path / "q.toml"
    quant.write_text('[passes.quantize]\nby = "name"\n[passes.quantize.seq_blocks_2.config]\n'
                     'name = "integer"\ndata_in_width = 8\ndata_in_frac_width = 4\n'
                     "weight_width = 4\nweight_frac_width = 3\nbias_width = 8\n"
                     "accum_width = 12\nresult_width = 8\n")  # fmt: skip
    out = tmp_path / "hw"
    argv = ["quantize", str(config), "--load", str(tmp_path / "t" / "model.pt"), "--quant",
            str(quant), "--out", str(out)]  # fmt: skip
    outcome = run_cli(argv, capsys)
    assert outcome.rc == 0, outcome.err
    (dense,) = json.loads((out / "precision.json").read_text())["layers"]
    assert dense["accum"] == {**dense["accum"], "width": 12, "frac_width": 7, "source": "given"}
    assert dense["result"]["width"] == 8 and dense["result"]["frac_width"] == 7
    assert dense["bias"]["frac_width"] == 4  # "NA": width // 2
    stored = np.load(out / "codes.npz")
    assert int(stored["seq_blocks_2.weight.frac_width"]) == 3
    state = torch.load(out / "quantized.pt", weights_only=True)
    assert torch.equal(torch.from_numpy(stored["seq_blocks_2.weight"] / 8.0).float(),
                       state["seq_blocks.2.weight"])  # fmt: skip


def test_a_batchnorm_feeding_a_quantized_layer_directly_is_listed_approximate():
    """bitscout rounds its result twice (stand-in, then the layer's data_in), hls4ml once."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3)).eval()
    plan = {"by": "type", "linear": {"config": layer((8, 4), (4, 2), (8, 4))}}
    assert precision(model, plan)["float_nodes"] == ["0"]
    relu = torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    assert precision(relu.eval(), plan)["float_nodes"] == []  # the ReLU casts, as bitscout does
