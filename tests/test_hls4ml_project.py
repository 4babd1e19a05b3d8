"""The exported hls4ml project stands alone: its convert script runs with hls4ml and no
bitscout from another directory and its C simulation reproduces bitscout's predictions on
tb_data; its YAML converts with `convert_from_config` under the part, clock, IO type,
strategy and reuse factor asked for; precision.json names hls4ml's typedefs as the generated
firmware spells them; the Resource strategy is refused where it would compute otherwise."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_support import finished_base_run, run_cli
from hls4ml_support import layer, need_hls4ml
from torch import nn

from bitscout.errors import ConfigError
from bitscout.export.hls4ml import to_hls4ml, verify
from bitscout.export.project import MODEL_FILE, hls_options
from bitscout.export.run import Subject, write_targets
from bitscout.quant.apply import quantize_model

BLOCKER = """import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "bitscout" or name.startswith("bitscout."):
            raise ImportError("bitscout is not installed here")
sys.meta_path.insert(0, Blocker())
"""
SATURATING = layer((8, 4), (6, 4), (8, 4), accum_width=10, accum_frac_width=6)
WRAPPING = layer((8, 3), (5, 3), (6, 2), "half_up", "wrap", accum_width=9)


class Net(nn.Module):
    """Two Linear layers with a Dropout hls4ml skips (it takes no layer index)."""

    def __init__(self) -> None:
        super().__init__()
        self.seq_blocks = nn.Sequential(
            nn.Linear(10, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq_blocks(x)


def small_mlp() -> nn.Module:
    torch.manual_seed(3)
    model = Net()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    return model.eval()


def plan(first: dict, second: dict | None = None) -> dict:
    return {"by": "name", "seq_blocks_0": {"config": first},
            "seq_blocks_3": {"config": second or first}}  # fmt: skip


def rows(n: int = 40) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(5).normal(0, 2, (n, 10))).float()


def mine(model: nn.Module, plan_: dict, x: torch.Tensor) -> np.ndarray:
    """The reference: each layer on the grid in float64, as fixed-point hardware computes it
    with exact accumulators (every value here has fewer than 53 significant bits)."""

    def q(v: torch.Tensor, width: int, frac: int, rounding: str, overflow: str) -> torch.Tensor:
        k = v.double() * 2.0**frac
        k = {"half_even": torch.round(k), "floor": torch.floor(k),
             "half_up": torch.floor(k + 0.5)}[rounding]  # fmt: skip
        lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
        k = k.clamp(lo, hi) if overflow == "saturate" else (k - lo) % 2**width + lo
        return k * 2.0**-frac

    h = x.double()
    for path, module in model.seq_blocks.named_children():
        if isinstance(module, nn.Linear):
            c = plan_[f"seq_blocks_{path}"]["config"]
            fmt = {
                t: (c[f"{t}_width"], c[f"{t}_frac_width"]) for t in ("data_in", "weight", "bias")
            }
            modes = (c["rounding"], c["overflow"])
            h = q(h, *fmt["data_in"], *modes)
            w, b = q(module.weight, *fmt["weight"], *modes), q(module.bias, *fmt["bias"], *modes)
            h = h @ w.T + b
        elif isinstance(module, nn.ReLU):
            h = h.clamp(min=0)
    return h.detach().numpy()


EXACT = plan(layer((8, 4), (6, 4), (8, 4)), layer((8, 2), (5, 3), (8, 5), "floor"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("project") / "export"
    write_targets(Subject(small_mlp(), EXACT, rows(), "a test plan"), ["hls4ml", "npz"], out)
    return out


def test_the_test_bench_holds_rows_and_bitscouts_exact_predictions(project):
    x = np.loadtxt(project / "tb_data" / "tb_input_features.dat", ndmin=2)
    y = np.loadtxt(project / "tb_data" / "tb_output_predictions.dat", ndmin=2)
    assert np.array_equal(x, rows().double().numpy())  # float32 values, written exactly
    assert np.array_equal(y, mine(small_mlp(), EXACT, rows()))


def test_the_convert_script_runs_without_bitscout_from_another_directory(project, tmp_path):
    need_hls4ml()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    script = project / "convert_hls4ml.py"
    assert "import bitscout" not in script.read_text()
    found = subprocess.run(
        [sys.executable, "-X", "importtime", str(script)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    imported = [line.split("|")[-1].strip() for line in found.stderr.splitlines() if "|" in line]
    assert "hls4ml" in imported and not any(m.startswith("bitscout") for m in imported)
    assert "largest difference from bitscout's predictions 0," in found.stdout, found.stdout
    assert "top class agrees on 100.00%" in found.stdout
    assert (project / "hls4ml_prj" / "firmware" / "myproject.cpp").is_file()
    assert not (tmp_path / "hls4ml_prj").exists()  # paths are the script's, not the cwd's
    assert (project / "hls4ml_prj" / "tb_data" / "tb_input_features.dat").is_file()


def _defines(project: Path) -> dict[str, str]:
    text = (project / "hls4ml_prj" / "firmware" / "defines.h").read_text()
    return {name: ap.replace(",0>", ">") for ap, name in
            re.findall(r"typedef (ap_fixed<[^>]*>) (\w+);", text)}  # fmt: skip


def test_precision_json_names_the_typedefs_hls4ml_writes(project):
    """Run after the script (it generated firmware/ from the YAML)."""
    need_hls4ml()
    if not (project / "hls4ml_prj" / "firmware").is_dir():
        pytest.skip("the convert script did not run")
    typedefs = _defines(project)
    precision = json.loads((project / "precision.json").read_text())
    assert "typedef" in precision["hls4ml_names"]
    names = [(e["hls4ml"], e) for e in precision["layers"]]
    assert [n["result"] for n, _ in names] == ["layer2_t", "result_t"]
    assert [n["data_in"] for n, _ in names] == ["input_t", "layer3_t"]  # the ReLU's
    for hls, entry in names:
        for tensor in ("weight", "bias", "accum", "result"):
            assert typedefs[hls[tensor]] == entry[tensor]["ap_fixed"], (tensor, hls)
        assert typedefs[hls["data_in"]] == entry["data_in"]["ap_fixed"]


def test_codes_document_their_layout_against_hls4ml_weights(project):
    need_hls4ml()
    import hls4ml

    stored = np.load(project / "codes.npz")
    assert "[out, in]" in str(stored["layout"]) and "transpose" in str(stored["layout"])
    config = yaml.safe_load((project / "hls4ml_config.yml").read_text())
    config["PytorchModel"] = torch.load(project / MODEL_FILE, weights_only=False)
    config["OutputDir"] = str(project / "from_yaml")
    config.pop("InputData"), config.pop("OutputPredictions")
    hls = hls4ml.converters.convert_from_config(config)
    assert [lay.name for lay in hls.get_layers()] == ["x", *(f"seq_blocks_{i}" for i in (0, 1, 3))]
    for name in ("seq_blocks_0", "seq_blocks_3"):
        k, frac = stored[f"{name}.weight"], int(stored[f"{name}.weight.frac_width"])
        weights = hls.graph[name].get_weights("weight").data
        assert np.array_equal(weights, k.T * 2.0**-frac)  # hls4ml's [in, out]


def test_the_yaml_carries_every_project_setting(tmp_path):
    need_hls4ml()
    import hls4ml

    options = hls_options("xcku115-flvb2104-2-i", 3.3, "io_stream", "resource", 4)
    out = tmp_path / "export"
    write_targets(Subject(small_mlp(), EXACT, rows(8), "flags"), ["hls4ml"], out, options, 5)
    config = yaml.safe_load((out / "hls4ml_config.yml").read_text())
    assert (config["Part"], config["ClockPeriod"], config["IOType"]) == (
        "xcku115-flvb2104-2-i", 3.3, "io_stream")  # fmt: skip
    model = config["HLSConfig"]["Model"]
    assert (model["Strategy"], model["ReuseFactor"]) == ("Resource", 4)
    assert len(np.loadtxt(out / config["InputData"], ndmin=2)) == 5
    config["PytorchModel"] = torch.load(out / MODEL_FILE, weights_only=False)
    config["OutputDir"], config["InputData"] = str(out / "prj"), str(out / config["InputData"])
    config["OutputPredictions"] = str(out / config["OutputPredictions"])
    hls = hls4ml.converters.convert_from_config(config)
    assert hls.config.get_config_value("Part") == "xcku115-flvb2104-2-i"
    assert hls.config.get_config_value("IOType") == "io_stream"
    assert hls.graph["seq_blocks_3"].get_attr("reuse_factor") == 4
    assert hls.graph["seq_blocks_3"].get_attr("strategy").lower() == "resource"


def test_resource_with_reuse_is_exact_for_exact_and_wrapping_accumulators(tmp_path):
    """Verified as exported: Resource, reuse factor 4, io_stream."""
    need_hls4ml()
    options = hls_options(io_type="io_stream", strategy="resource", reuse_factor=4)
    mixed = plan(layer((8, 4), (6, 4), (8, 4)), WRAPPING)
    found = verify(small_mlp(), mixed, rows(), tmp_path / "prj", options=options)
    assert all(e["max_abs_difference"] == 0.0 for e in found["layers"]), found
    assert found["max_logit_difference"] == 0.0 and found["top_class_agreement"] == 1.0


def test_resource_refuses_a_narrow_saturating_accumulator():
    model, resource = small_mlp(), hls_options(strategy="resource", reuse_factor=2)
    with pytest.raises(ConfigError) as err:
        to_hls4ml(model, plan(SATURATING), (10,), options=resource)
    assert err.value.key == "strategy" and "saturates" in str(err.value)
    assert "\n" not in str(err.value)
    to_hls4ml(model, plan(SATURATING), (10,))  # latency: bitscout's order, exported
    to_hls4ml(model, plan(WRAPPING), (10,), options=resource)  # modular: any order
    wide = layer((8, 4), (6, 4), (8, 4), accum_width=24, accum_frac_width=8)
    to_hls4ml(model, plan(wide), (10,), options=resource)  # holds every partial sum


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"part": "xc vu"}, "part"), ({"clock_period": 0}, "clock_period"),
        ({"clock_period": float("nan")}, "clock_period"), ({"io_type": "axi"}, "io_type"),
        ({"strategy": "Latency"}, "strategy"), ({"reuse_factor": 0}, "reuse_factor"),
        ({"reuse_factor": True}, "reuse_factor"),
    ],
)  # fmt: skip
def test_each_setting_is_checked(kwargs, key):
    with pytest.raises(ConfigError) as err:
        hls_options(**kwargs)
    assert err.value.key == key


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> dict[str, Path]:
    return finished_base_run(tmp_path_factory.mktemp("base"))


def test_the_flags_reach_the_project_and_are_refused_on_one_line(base_run, tmp_path, capsys):
    run, out = base_run["run"], tmp_path / "hw"
    argv = ["export", str(run), "--to", "hls4ml", "--out", str(out), "--part", "xc7z020clg400-1",
            "--clock-period", "10", "--strategy", "resource", "--reuse-factor", "2"]  # fmt: skip
    outcome = run_cli(argv, capsys)
    assert outcome.rc == 0, outcome.err
    config = yaml.safe_load((out / "hls4ml_config.yml").read_text())
    assert (config["Part"], config["ClockPeriod"]) == ("xc7z020clg400-1", 10.0)
    assert config["HLSConfig"]["LayerName"]["seq_blocks_2"]["ReuseFactor"] == 2
    quant = tmp_path / "narrow.toml"
    quant.write_text(
        "[passes.quantize]\nby = 'name'\n[passes.quantize.seq_blocks_2.config]\n"
        + "".join(f"{k} = {v!r}\n" for k, v in SATURATING.items()).replace("'", '"')
    )
    for extra, flag in (
        (["--quant", str(quant), "--strategy", "resource"], "--strategy: resource adds"),
        (["--io-type", "axi"], "--io-type"),
        (["--clock-period", "x"], "clock"),
    ):
        bad = run_cli(["export", str(run), "--to", "hls4ml", "--out", str(tmp_path / "no"),
                       *extra], capsys)  # fmt: skip
        assert bad.rc == 2 and bad.err.count("\n") == 1 and flag in bad.err, bad.err
    assert not (tmp_path / "no").exists()


def test_resource_does_compute_otherwise_on_a_narrow_saturating_accumulator(tmp_path):
    """Why the refusal: the same plan, Latency exact, hls4ml's Resource (reuse 4) not."""
    need_hls4ml()
    import hls4ml

    from bitscout.export.hls4ml import grid_model
    from bitscout.export.project import project_config

    x = torch.from_numpy(np.random.default_rng(0).normal(0, 3, (500, 10))).float()
    narrow = plan(SATURATING)
    assert verify(small_mlp(), narrow, x, tmp_path / "latency")["max_logit_difference"] == 0.0
    grid = grid_model(small_mlp(), narrow)
    config = to_hls4ml(grid, narrow, (10,))  # as Latency, then switched by hand
    for entry in [config["Model"], *config["LayerName"].values()]:
        entry.update({"Strategy": "Resource", "ReuseFactor": 4} if "ReuseFactor" in entry else {})
    project = project_config(config, hls_options(), grid, str(tmp_path / "rs"), test_bench=False)
    hls = hls4ml.converters.convert_from_config(project)
    hls.compile()
    theirs = np.asarray(hls.predict(np.ascontiguousarray(x.double().numpy()))).reshape(-1, 4)
    scored = quantize_model(grid, narrow)(x).detach().double().numpy()  # = Latency's, above
    assert np.max(np.abs(theirs - scored)) > 0.5


def test_the_flags_help_states_the_defaults_the_library_uses():
    """The parser imports no torch, so it spells the defaults out: held to HlsOptions here."""
    from bitscout.cli.parser import build_parser
    from bitscout.export.project import DEFAULTS

    export = build_parser()._subparsers._group_actions[0].choices["export"]  # type: ignore[union-attr]
    text = " ".join(export.format_help().split())
    for flag, value in (("--part", DEFAULTS.part), ("--clock-period", f"{DEFAULTS.clock_period:g}"),
                        ("--io-type", DEFAULTS.io_type), ("--strategy", DEFAULTS.strategy),
                        ("--reuse-factor", DEFAULTS.reuse_factor)):  # fmt: skip
        assert re.search(rf"{flag} \S+ [^-]*\b{value}\b", text), (flag, value)
