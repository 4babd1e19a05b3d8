"""What re-derives a comparison: the command and every option, bitscout's version and git
commit, the float model's weights and the data's SHA-256 (compare.md and compare.json)."""

import hashlib
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import nn

from bitscout.evaluate.evaluator import LossFn
from bitscout.study.run import Job


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the float model's state (names, then bytes, in name order): identifies the
    weights whatever file, if any, they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True,
                              timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """bitscout's version, and its git commit when it runs from a checkout that tracks this
    file (an installed copy inside some other repository has none)."""
    try:
        version: str | None = metadata.version("bitscout")
    except metadata.PackageNotFoundError:
        version = None
    tracked = _git("ls-files", "--error-unmatch", Path(__file__).name) is not None
    commit = _git("rev-parse", "HEAD") if tracked else None
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"bitscout_version": version, "git_commit": commit, "git_dirty": dirty}


def provenance(job: Job, record: Mapping[str, Any], n_trials: int) -> dict[str, Any]:
    """compare.md's and compare.json's record: `record` (the command, its options and where
    the model came from) with the code's version, the weights' and the data's SHA-256."""
    model = {"class": type(job.model).__name__, **record.get("model", {}),
             "weights_sha256": weights_sha256(job.model)}  # fmt: skip
    found = {"command": record.get("command"),
             "options": {**record.get("options", {}), "trials_per_run": n_trials},
             **code_version(), "model": model,
             "data": {"rows": job.data.rows, "sha256": job.data.sha256}}  # fmt: skip
    if job.test_data is not None:
        found["test_data"] = {"rows": job.test_data.rows, "sha256": job.test_data.sha256}
    return found


def python_record(
    space: Any, options: Mapping[str, Any], extra: Mapping[str, Any], loss_fn: LossFn | None
) -> dict[str, Any]:
    """The provenance of a call from Python: every argument but the model and the data (whose
    SHA-256 are recorded), named as the call spells them."""
    named = lambda f: None if f is None else getattr(f, "__qualname__", type(f).__name__)  # noqa: E731
    where = str(space) if isinstance(space, str | Path) else None
    return {
        "command": "bitscout.compare(model, data, space, ...)",
        "options": {
            "space": where or space,
            **options,
            "metrics": {k: named(f) for k, f in extra.items()},
            "loss_fn": named(loss_fn),
        },
        "model": {"source": "given"},
    }
