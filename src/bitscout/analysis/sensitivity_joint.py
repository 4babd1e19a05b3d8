"""`bitscout sensitivity --joint` (Python `joint=True`): the `ilp` strategy's own probes, for
an `ilp` search (or `warm_start = "ilp"`) to reuse instead of evaluating them again.

Where the usual probes quantize one field with every other tensor float (none of them a
candidate of the space), a joint probe is a candidate: the ILP's reference (widths at their
most precise choice, every other field at its first) with one tensor's joint choice (width x
frac width, or a format's fields together) changed. They are scored by the evaluator a
search uses, on every metric a search reports, and written to sensitivity_joint.json with the
measurement they belong to (data rows, model state and code, loss and metric code, every
field of the space) and a checksum of the probes."""

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bitscout._core.files import write_text
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant.space import SearchSpace
from bitscout.study.run import CLASSIFICATION_ONLY, REPORTED
from bitscout.study.strategies.ilp_reuse import (
    FILE,
    SCHEMA_VERSION,
    joint_probes,
    measurement,
    probes_digest,
)

__all__ = ["FILE", "check_joint", "joint_metrics", "measure_joint", "write_joint"]


def check_joint(space: SearchSpace, key: str) -> None:
    """The ILP's probes need one format per layer, as the `ilp` strategy does."""
    if space.mixed:
        rule = "probes as the ilp strategy does, which needs one format per layer"
        raise ConfigError(key, rule, True)


def joint_metrics(wanted: Sequence[str]) -> list[str]:
    """`wanted` and every other metric a search reports (a search reuses a probe only when
    it holds every metric the search measures); accuracy and loss stay as `wanted` has them."""
    reported = [m for m in REPORTED if m not in CLASSIFICATION_ONLY]
    return list(dict.fromkeys([*wanted, *reported]))


def measure_joint(
    evaluator: Evaluator, space: SearchSpace, say: Callable[[str], None]
) -> dict[str, Any]:
    """Evaluate the ILP's probes of `space` with `evaluator` (together, as the fast path
    shares their work): sensitivity_joint.json's content, without its command."""
    start = time.perf_counter()
    found = joint_probes(space)
    scored = evaluator.evaluate_many([config for _, _, config in found])
    pairs = zip(found, scored, strict=True)
    probes = [{"layer": layer, "tensor": tensor, "config": config, "metrics": metrics}
              for (layer, tensor, config), (metrics, _) in pairs]  # fmt: skip
    wall = time.perf_counter() - start
    say(f"{len(probes)} joint probes (the ilp strategy's: the reference, then each tensor's "
        f"joint choices) in {wall:.2f} s")  # fmt: skip
    units = {m: evaluator.get(m).unit for m in evaluator.metrics}
    return {"schema_version": SCHEMA_VERSION, "rows": evaluator.rows,
            "measurement": measurement(evaluator, space), "metrics": list(evaluator.metrics),
            "metric_units": units, "wall_s": wall, "probes": probes,
            "probes_sha256": probes_digest(probes)}  # fmt: skip


def write_joint(content: dict[str, Any], out: Path, command: str) -> Path:
    """sensitivity_joint.json in `out` (the directory exists)."""
    path = out / FILE
    write_text(path, json.dumps({**content, "command": command}, indent=1) + "\n")
    return path
