"""Malformed input (tests/malformed_corpus.py): each case must end with exit status 2 and one
stderr line that names the file (or flag), the key and what is allowed, with no traceback and
nothing written to the existing run directory given as `--out`.

`BITSCOUT_MALFORMED_TABLE=table.md pytest tests/test_malformed.py` also writes a Markdown
table of every case with its exit status and stderr line.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import Outcome, base_doc, edit, error_problems, run_cli, snapshot, write_config
from malformed_corpus import CASES, Case

from bitscout.cli import main
from bitscout.zoo.models import build_model


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished tiny run (checkpoint, study, reports) to copy as the existing `--out`, a
    checkpoint of it outside that directory, and checkpoints that must be refused."""
    root = tmp_path_factory.mktemp("assets")
    config = write_config(root / "base.toml", base_doc())
    run = root / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    assert main(["search", str(config), "--out", str(run)]) == 0  # reuses run/model.pt
    ckpt = root / "model.pt"
    shutil.copy2(run / "model.pt", ckpt)
    other = root / "mlp.pt"
    torch.save(build_model("mlp").state_dict(), other)
    garbage = root / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    listpt = root / "list.pt"
    torch.save([1, 2, 3], listpt)
    empty = root / "empty.pt"
    empty.write_bytes(b"")
    badquant = write_config(root / "badquant.toml", {"passes": {"quantize": {
        "by": "type", "linear": {"config": {"name": "integer", "weight_width": 0}}}}})  # fmt: skip
    return {
        "run": run, "ckpt": ckpt, "other": other, "garbage": garbage, "listpt": listpt,
        "empty": empty, "badquant": badquant,
    }  # fmt: skip


def _argv(case: Case, places: dict[str, str]) -> list[str]:
    return [a.format(**places) for a in (*case.argv, *case.extra)]


@dataclass(frozen=True)
class Ran:
    outcome: Outcome
    places: dict[str, str]  # placeholder -> path: what the error line may have to name
    run_dir_changed: bool


def run_case(case: Case, assets: dict[str, Path], tmp: Path, capsys: Any) -> Ran:
    """Write the case's config, copy the finished run as `--out`, run the CLI."""
    config = tmp / "case.toml"
    if isinstance(case.text, bytes):
        config.write_bytes(case.text)
    elif case.text is not None:
        config.write_text(case.text, encoding="utf-8")
    else:
        doc = base_doc()
        for key, value in case.edits:
            edit(doc, key, value)
        write_config(config, doc)
    run = tmp / "run"
    shutil.copytree(assets["run"], run)
    places = {k: str(v) for k, v in assets.items()} | {
        "run": str(run), "config": str(config), "tmp": str(tmp / "scratch")
    }  # fmt: skip
    (tmp / "scratch").mkdir()
    before = snapshot(run)
    outcome = run_cli(_argv(case, places), capsys)
    return Ran(outcome, places, snapshot(run) != before)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_one_line_exit_2(
    case: Case, assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = run_case(case, assets, tmp_path, capsys)
    outcome = ran.outcome
    problems = error_problems(outcome)
    line = outcome.err.strip()
    for text in (case.names.format(**ran.places), *case.expect):
        if text not in line:
            problems.append(f"the error line lacks {text!r}")
    if any(":pw@" in a for a in case.extra) and ":pw" in outcome.err + outcome.out:
        problems.append("the storage password was printed")
    if ran.run_dir_changed:
        problems.append("the existing run directory given as --out was changed")
    assert not problems, f"{case.what}:\n  " + "\n  ".join(problems) + f"\nstderr: {outcome.err}"


def test_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({repr((c.edits, c.text, c.argv, c.extra)) for c in CASES}) == len(CASES)


def test_storage_password_is_never_shown(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever a storage error says, a password in the URL (even one holding '@') stays
    hidden."""
    config = write_config(tmp_path / "ok.toml", base_doc())
    for url in ("postgresql://user:s3cr3t@127.0.0.1:1/db", "mysql://user:s3@cr3t@127.0.0.1:1/db"):
        argv = ["search", str(config), "--out", str(tmp_path / "out"),
                "--load", str(assets["ckpt"]), "--storage", url]  # fmt: skip
        outcome = run_cli(argv, capsys)
        assert outcome.rc == 2, outcome
        assert "cr3t" not in outcome.out + outcome.err


def _cell(text: str) -> str:
    """`text` in one Markdown table cell: pipes escaped, line breaks shown as ⏎."""
    return text.strip().replace("|", "\\|").replace("\n", " ⏎ ")


def test_write_table(
    assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, capsys: Any
) -> None:
    """The Markdown table of every case for the closing note (id, what is malformed, exit
    status, the stderr line): one row of four cells per case, each case exit 2 with a stderr
    line and no exception. Written to $BITSCOUT_MALFORMED_TABLE when set."""
    rows = ["| case | what is malformed | exit | stderr |", "|---|---|---|---|"]
    for case in CASES:
        outcome = run_case(case, assets, tmp_path_factory.mktemp(case.id), capsys).outcome
        err = _cell(outcome.err)
        if outcome.escaped:
            err = "EXCEPTION: " + outcome.escaped.strip().splitlines()[-1]
        rows.append(f"| {case.id} | {_cell(case.what)} | {outcome.rc} | `{err}` |")
    table = "\n".join(rows) + "\n"
    target = os.environ.get("BITSCOUT_MALFORMED_TABLE")
    path = Path(target) if target else tmp_path_factory.mktemp("table") / "malformed.md"
    path.write_text(table, encoding="utf-8")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == rows[:2] and len(lines) == len(CASES) + 2
    for case, line in zip(CASES, lines[2:], strict=True):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 4, line  # escaping kept every row to its four columns
        assert cells[0] == case.id and cells[2] == "2", line
        assert cells[3] not in ("``", "") and not cells[3].startswith("`EXCEPTION"), line
