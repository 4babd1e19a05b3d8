"""Shared by the malformed-input corpus and the config fuzzer: a cheap valid config, a way to
write it, an in-process CLI call that never lets an exception pass unseen, and a snapshot of
a directory to prove that a failed command wrote nothing.
"""

from __future__ import annotations

import copy
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from bitscout.cli import main

ERROR_PREFIX = "bitscout: error: "
DELETE = object()  # marks a key to remove in `edit`

# jsc-tiny on 300 random rows shaped like the jet data: training takes one epoch of a few
# batches and a search of two trials takes a fraction of a second, so a checkpoint of this
# config fits every config the tests derive from it (same model, same feature count).
BASE: dict[str, Any] = {
    "model": "jsc-tiny",
    "dataset": "fake",
    "max_epochs": 1,
    "batch_size": 64,
    "learning_rate": 1e-2,
    "seed": 1,
    "dataset_options": {"num_samples": 300, "num_features": 16, "num_classes": 5},
    "search": {
        "search_space": {
            "name": "graph/quantize/mixed_precision_ptq",
            "setup": {"by": "name"},
            "seed": {
                "default": {"config": {"name": ["NA"]}},
                "seq_blocks_2": {
                    "config": {
                        "name": ["integer"],
                        "data_in_width": [4, 8],
                        "data_in_frac_width": ["NA"],
                        "weight_width": [2, 4],
                        "weight_frac_width": ["NA"],
                        "bias_width": [8],
                        "bias_frac_width": ["NA"],
                    }
                },
            },
        },
        "strategy": {
            "name": "optuna",
            "eval_mode": True,
            "setup": {
                "n_trials": 2,
                "sampler": "random",
                "sum_scaled_metrics": True,
                "direction": "maximize",
            },
            "metrics": {
                "accuracy": {"scale": 2.0, "direction": "maximize"},
                "average_bitwidth": {"scale": -0.1, "direction": "minimize"},
            },
        },
    },
}


def base_doc() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def digits_doc(**layer: list) -> dict:
    """`base_doc` searching the digits MLP (trained 5 epochs) over one integer table for every
    layer: `layer` gives its fields' choices (data_in_width, weight_width, ...)."""
    doc = edit(base_doc(), "model", "mlp")
    doc = edit(doc, "dataset", "digits")
    doc["dataset_options"] = {}
    doc = edit(doc, "max_epochs", 5)
    doc["search"]["search_space"]["seed"] = {"default": {"config": {"name": ["integer"], **layer}}}
    return doc


def edit(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set (or, with DELETE, remove) the key at dotted path `dotted`, creating tables."""
    *tables, last = dotted.split(".")
    node = doc
    for name in tables:
        node = node.setdefault(name, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return doc


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def finished_base_run(root: Path) -> dict[str, Path]:
    """A finished search of the base config (4 candidates, 2 trials) under `root`: the
    config, the run directory and its checkpoint."""
    config = write_config(root / "base.toml", base_doc())
    run = root / "run"
    assert main(["search", str(config), "--out", str(run)]) == 0
    return {"root": root, "config": config, "run": run, "ckpt": run / "model.pt"}


@dataclass(frozen=True)
class Outcome:
    rc: int | None
    out: str
    err: str
    escaped: str | None = None  # traceback of an exception that escaped main(), if any


def run_cli(argv: list[str], capsys: Any) -> Outcome:
    """`bitscout.cli.main(argv)` in-process. argparse's own errors end in SystemExit, which is
    recorded as its exit code; any other exception is kept as text so a test can show it."""
    capsys.readouterr()  # drop what earlier calls printed
    escaped = None
    try:
        rc: int | None = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 - any other escape is the finding; keep it to report
        rc, escaped = None, traceback.format_exc()
    captured = capsys.readouterr()
    return Outcome(rc, captured.out, captured.err, escaped)


def error_problems(outcome: Outcome) -> list[str]:
    """What is wrong with a failure's output: empty when it is exit status 2 with exactly one
    stderr line `bitscout: error: ...` and no traceback anywhere."""
    problems = []
    if outcome.escaped is not None:
        problems.append(f"exception escaped main():\n{outcome.escaped}")
    if outcome.rc != 2:
        problems.append(f"exit status {outcome.rc}, expected 2")
    lines = outcome.err.splitlines()
    if len(lines) != 1 or not outcome.err.endswith("\n"):
        problems.append(f"stderr has {len(lines)} lines, expected 1")
    if not outcome.err.startswith(ERROR_PREFIX):
        problems.append(f"stderr does not start with {ERROR_PREFIX!r}")
    if "Traceback" in outcome.err + outcome.out:
        problems.append("a traceback was printed")
    return problems


Snapshot = dict[str, tuple[int, int]]


def snapshot(root: Path) -> Snapshot:
    """Every file and directory under `root`: relative path -> (size, mtime in ns)."""
    # The root and every directory are included: a file created and removed again still
    # changes its directory's mtime.
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in [root, *sorted(root.rglob("*"))]
    }
