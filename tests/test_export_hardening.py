"""Issue 20 (items 6, 8 and export/report parts of 16): `bitscout export` exports the model
that was searched or refuses in one line; a plan whose hls4ml C++ emulation would abort is
refused from its formats, and an abort that still happens is one line; a full disk leaves no
half-written file; a tampered summary.json or trials.csv, and `--rows` below 1, are one line."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from cli_support import base_doc, run_cli, write_config
from hls4ml_support import layer, need_hls4ml
from torch import nn

import bitscout
from bitscout.cli import main
from bitscout.errors import ConfigError
from bitscout.export import hls4ml as hls4ml_export
from bitscout.export import to_hls4ml
from bitscout.export.emulation import isolated
from bitscout.export.hardware import HwType
from bitscout.results.rundir import file_sha256
from bitscout.zoo.models import build_model

# the issue's plan: 2-bit weights with 7 fractional bits, data_in with one integer bit, an 8-bit
# accumulator with 2 fractional bits under round-to-nearest: every product (ap_fixed<6,-4>)
# lies below the accumulator's rounding bit
ABORTING = {"name": ["integer"], "data_in_width": [4], "data_in_frac_width": [3],
            "weight_width": [2], "weight_frac_width": [7], "bias_width": [8],
            "bias_frac_width": [4], "accum_width": [8], "accum_frac_width": [2]}  # fmt: skip
HASH = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A search that trained its model into the run (one candidate: the aborting plan)."""
    root = tmp_path_factory.mktemp("export_hardening")
    doc = base_doc()
    doc["search"]["search_space"]["seed"]["seq_blocks_2"]["config"] = ABORTING
    config = write_config(root / "c.toml", doc)
    argv = ["search", str(config), "--out", str(root / "run"), "--strategy", "bruteforce",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return root / "run"


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def one_line(outcome, rc: int = 2) -> str:
    assert outcome.escaped is None, outcome.escaped
    assert outcome.rc == rc and outcome.err.count("\n") == 1, outcome.err
    return outcome.err


# --- item 6: the checkpoint that was searched ------------------------------------------------


def _retrained(run: Path) -> None:
    """Another model in the run's model.pt: same architecture, other weights."""
    state = torch.load(run / "model.pt", weights_only=True)
    state = {k: v + 0.25 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, run / "model.pt")


def test_a_trained_run_records_its_checkpoint_sha256(run_dir):
    source = json.loads((run_dir / "summary.json").read_text())["model_source"]
    assert source["trained"] is True and source["path"] == str(run_dir / "model.pt")
    assert source["sha256"] == file_sha256(run_dir / "model.pt")


def _moved(run: Path) -> str:
    """The copied run's summary.json names its own model.pt; the recorded sha256."""
    summary = json.loads((run / "summary.json").read_text())
    summary["model_source"]["path"] = str(run / "model.pt")
    (run / "summary.json").write_text(json.dumps(summary))
    return summary["model_source"]["sha256"]


def test_export_of_another_checkpoint_names_both_hashes(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    recorded = _moved(run)
    _retrained(run)
    found = file_sha256(run / "model.pt")
    err = one_line(run_cli(["export", str(run), "--to", "checkpoint"], capsys))
    assert set(HASH.findall(err)) == {recorded, found}
    assert str(run / "model.pt") in err and "summary.json" in err
    assert not (run / "export").exists()
    # the Python door reads the run through the same reader
    with pytest.raises(ConfigError) as caught:
        bitscout.export(run, to="checkpoint", model=build_model("jsc-tiny"))
    assert set(HASH.findall(str(caught.value))) == {recorded, found}


def test_a_missing_recorded_checkpoint_falls_back_to_the_runs_and_checks_it(
    run_dir, tmp_path, capsys
):
    run = copy_run(run_dir, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["model_source"]["path"] = str(tmp_path / "gone.pt")
    (run / "summary.json").write_text(json.dumps(summary))
    assert run_cli(["export", str(run), "--to", "npz"], capsys).rc == 0
    _retrained(run)
    err = one_line(run_cli(["export", str(run), "--to", "npz"], capsys))
    assert len(set(HASH.findall(err))) == 2


def test_an_older_trained_run_without_a_sha256_says_it_cannot_be_checked(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["model_source"] = "trained"  # what runs recorded before
    (run / "summary.json").write_text(json.dumps(summary))
    outcome = run_cli(["export", str(run), "--to", "npz"], capsys)
    assert outcome.rc == 0 and "cannot be checked" in " ".join(outcome.out.split())


# --- item 8: what hls4ml's ap_types abort on -------------------------------------------------


def _cast_program(cases: list[tuple[int, int, int, int, str]]) -> str:
    lines = ['#include "ap_fixed.h"', "#include <cstdlib>", "int main(int c, char** v) {",
             "switch (atoi(v[1])) {"]  # fmt: skip
    for k, (w2, i2, w, i, q) in enumerate(cases):
        lines.append(f"case {k}: {{ ap_fixed<{w2},{i2}> a; a.V = -1; "
                     f"ap_fixed<{w},{i},{q},AP_SAT> b = a; return b == 7 ? 3 : 0; }}")  # fmt: skip
    return "\n".join([*lines, "}", "return 0;", "}"])


def test_the_abort_condition_is_the_one_hls4ml_ap_types_have(tmp_path):
    """Independent reference: the casts compiled with hls4ml's bundled ap_types, each run in
    its own process; exactly those check_casts refuses abort."""
    need_hls4ml()
    import hls4ml

    headers = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    rounding = {"half_even": "AP_RND_CONV", "half_up": "AP_RND", "floor": "AP_TRN"}
    cases = [(w2, i2, w, i, r) for w2 in (1, 2, 6) for i2 in (-9, -5, -4, -3, 0)
             for w, i in ((8, 6), (4, -2)) for r in rounding]  # fmt: skip
    source = tmp_path / "casts.cpp"
    source.write_text(_cast_program([(*c[:4], rounding[c[4]]) for c in cases]))
    binary = tmp_path / "casts"
    subprocess.run(["g++", "-O0", f"-I{headers}", str(source), "-o", str(binary)], check=True)
    aborted = {
        k
        for k in range(len(cases))
        if subprocess.run([str(binary), str(k)], capture_output=True).returncode < 0
    }
    refused = {k for k, (w2, i2, w, i, r) in enumerate(cases)
               if hls4ml_export.aborts(w2, w2 - i2, HwType(w, w - i, r))}  # fmt: skip
    assert aborted == refused and 0 < len(aborted) < len(cases)


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc=nn.Linear(4, 3))).eval()  # a name hls4ml keeps


@pytest.mark.parametrize(
    ("config", "what"),
    [
        (layer((4, 3), (2, 7), (8, 4), accum_width=8, accum_frac_width=2), "product"),
        (layer((4, 2), (4, 2), (2, 7), "half_up", accum_width=8, accum_frac_width=2), "bias"),
        (
            layer(
                (6, 5),
                (4, 5),
                (8, 4),
                accum_width=8,
                accum_frac_width=10,
                result_width=4,
                result_frac_width=1,
            ),
            "accumulator",
        ),
    ],
)
def test_a_plan_hls4ml_would_abort_on_is_refused_with_its_reason(config, what):
    with pytest.raises(ConfigError) as caught:
        to_hls4ml(_linear(), {"by": "type", "linear": {"config": config}})
    message = str(caught.value)
    assert "\n" not in message and "passes.quantize.fc" in message
    assert what in message and "below the rounding bit" in message


def test_the_same_layouts_one_bit_away_or_with_floor_are_exported():
    one_bit_more = layer((4, 3), (2, 7), (8, 4), accum_width=8, accum_frac_width=4)
    floor = layer((4, 3), (2, 7), (8, 4), "floor", accum_width=8, accum_frac_width=2)
    for config in (one_bit_more, floor):
        to_hls4ml(_linear(), {"by": "type", "linear": {"config": config}})


def test_export_of_the_issues_plan_refuses_hls4ml_before_writing(run_dir, tmp_path, capsys):
    out = tmp_path / "hw"
    argv = ["export", str(run_dir), "--to", "hls4ml", "--out", str(out), "--verify"]
    err = one_line(run_cli(argv, capsys))
    assert "seq_blocks_2" in err and "ap_fixed<6,-4" in err and "ap_fixed<8,6,AP_RND_CONV" in err
    assert not out.exists()
    # the weights themselves export: only hls4ml cannot run them
    assert run_cli(["export", str(run_dir), "--to", "checkpoint,npz", "--out", str(out)],
                   capsys).rc == 0  # fmt: skip


def test_an_abort_in_the_emulation_is_one_line(tmp_path, monkeypatch):
    """With the refusal switched off, the compiled emulation aborts in a child process: one
    line with the assertion, and this process lives on."""
    need_hls4ml()
    monkeypatch.setattr(hls4ml_export, "check_casts", lambda nodes: None)
    plan = {"by": "type", "linear": {"config": layer((4, 3), (2, 7), (8, 4), accum_width=8,
                                                     accum_frac_width=2)}}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        hls4ml_export.verify(_linear(), plan, torch.rand(5, 4), tmp_path / "prj")
    message = str(caught.value)
    assert "\n" not in message and "SIGABRT" in message and "beyond MSB" in message


def test_isolated_hands_back_results_exceptions_and_signals():
    assert isolated(lambda: {"y": [1, 2]}, "work") == {"y": [1, 2]}
    with pytest.raises(KeyError, match="boom"):
        isolated(lambda: {}["boom"], "work")

    def abort() -> None:
        os.write(2, b"first\nAssertion `i < _AP_W' failed.\n")
        os.abort()

    with pytest.raises(ConfigError) as caught:
        isolated(abort, "the emulation")
    assert str(caught.value) == (
        "--verify: the emulation was killed by SIGABRT (Assertion `i < _AP_W' failed.)"
    )


# --- item 16: --rows, a full disk, a tampered summary.json or trials.csv ---------------------


@pytest.mark.parametrize("rows", ["0", "-3"])
def test_rows_below_one_are_refused_before_anything_is_written(run_dir, tmp_path, rows, capsys):
    out = tmp_path / "hw"
    argv = ["export", str(run_dir), "--to", "checkpoint", "--verify", "--rows", rows, "--out",
            str(out)]  # fmt: skip
    err = one_line(run_cli(argv, capsys))
    assert "--rows" in err and "1" in err
    assert not out.exists()


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(run_dir, tmp_path, capsys,
                                                           monkeypatch):  # fmt: skip
    """A write through a file handle that fills the disk half-way (an OSError without a file
    name, as a real ENOSPC): the line names the file, which is left neither half-written nor
    as a temporary file."""
    out = tmp_path / "hw"
    real = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.parent == out and ".quantized.pt." in self.name:
            real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    argv = ["export", str(run_dir), "--to", "checkpoint", "--out", str(out)]
    err = one_line(run_cli(argv, capsys), rc=1)
    assert "ENOSPC" in err and str(out / "quantized.pt") in err
    assert sorted(p.name for p in out.iterdir()) == ["precision.json"]
    json.loads((out / "precision.json").read_text())  # whole


def test_a_real_full_disk(run_dir, tmp_path):
    """A 4 KB tmpfs (needs root; skipped otherwise): one page, too small for the export.
    Before, torch.save's RuntimeError escaped as a traceback."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        argv = [sys.executable, "-m", "bitscout", "export", str(run_dir), "--to",
                "checkpoint,npz", "--out", str(disk / "hw")]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "ENOSPC" in done.stderr and str(disk / "hw") in done.stderr
        left = sorted(p.name for p in (disk / "hw").iterdir())
        assert left in ([], ["precision.json"])  # nothing half-written, no temporary file
        for name in left:
            json.loads((disk / "hw" / name).read_text())
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _tamper(summary: dict, how: str) -> object:
    if how == "older":
        summary["schema_version"] = 2
    elif how == "no version":
        del summary["schema_version"]
    elif how == "missing key":
        del summary["dimensions"]
    elif how == "wrong type":
        summary["eval_samples"] = "many"
    elif how == "objective":
        summary["objective"]["metrics"] = [{"name": "accuracy"}]
    elif how == "model_source":
        summary["model_source"] = {"path": 3}
    elif how == "constraint":
        summary["objective"]["constraints"] = ["accuracy >> 3"]
    elif how == "not an object":
        return [summary]
    return summary


TAMPERED = {"older": "schema_version 2", "no version": "schema_version None",
            "missing key": "dimensions", "wrong type": "eval_samples",
            "objective": "objective.metrics", "model_source": "model_source",
            "constraint": "objective.constraints", "not an object": "JSON object"}  # fmt: skip


@pytest.mark.parametrize("how", list(TAMPERED))
@pytest.mark.parametrize("command", ["export", "report"])
def test_a_tampered_summary_is_one_line_naming_file_and_key(run_dir, tmp_path, capsys, how,
                                                           command):  # fmt: skip
    run = copy_run(run_dir, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(_tamper(summary, how)))
    argv = [command, str(run), *(["--to", "npz"] if command == "export" else [])]
    err = one_line(run_cli(argv, capsys))
    assert str(run / "summary.json") in err and TAMPERED[how] in err


def test_a_tampered_space_is_one_line_naming_the_summary(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["layers"] = {"x": "linear"}
    (run / "summary.json").write_text(json.dumps(summary))
    err = one_line(run_cli(["export", str(run), "--to", "npz", "--trial", "0"], capsys))
    assert str(run / "summary.json") in err and "space" in err


def _set_first_row(path, column, text):
    """Write `text` into `column` of the first data row of a CSV file."""
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[lines[0].split(",").index(column)] = text
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("command", ["export", "report"])
def test_text_in_a_metric_column_names_file_column_and_row(run_dir, tmp_path, capsys, command):
    run = copy_run(run_dir, tmp_path / "run")
    _set_first_row(run / "trials.csv", "accuracy", "oops")
    argv = [command, str(run), *(["--to", "npz"] if command == "export" else [])]
    err = one_line(run_cli(argv, capsys))
    assert str(run / "trials.csv") in err and "'accuracy'" in err and "row 1" in err
    assert "'oops'" in err


def test_a_metric_that_came_out_nan_is_still_read(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    _set_first_row(run / "trials.csv", "loss", "nan")
    assert run_cli(["report", str(run)], capsys).rc == 0
