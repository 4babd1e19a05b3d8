"""A joint sensitivity result (`bitscout sensitivity --joint`, sensitivity_joint.json) reused
by an `ilp` search and by `warm_start = "ilp"`. Its probes are the ILP's own: the reference,
and the reference with one tensor's joint choice changed. Their metrics enter the evaluator's
cache, so each probe the lazy search asks for is recorded as a trial (`ilp_reused`, `cached`)
without being evaluated again, and the search makes the trials it would make without them.

Only a result of the same measurement is reused: the same data rows, model state and code,
loss and user metric code, every field of the space, every metric the search measures, and
post-training scoring. One given explicitly (`setup.sensitivity`) that differs is refused;
one merely found in the run directory is ignored with a notice. A damaged file (unreadable,
its checksum broken, probes missing or extra) is refused either way: never reused in part."""

import hashlib
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant.space import Config, SearchSpace
from bitscout.study.fingerprint import (
    code_digest,
    metric_digest,
    model_code,
    space_fields,
    state_digest,
    users,
)
from bitscout.study.strategies.base import SearchContext
from bitscout.study.strategies.ilp import _key, reference
from bitscout.study.strategies.ilp_model import groups_of

FILE = "sensitivity_joint.json"
SCHEMA_VERSION = 1
REFERENCE = "reference"  # the reference probe's `tensor`
# what a measurement is made of, in the order a difference is reported, and its words
PARTS = (
    ("space", "the space differs"),
    ("data", "the data rows differ"),
    ("checkpoint_sha256", "the model's state differs"),
    ("model_code", "the model's code differs"),
    ("loss_fn", "loss_fn differs"),
)


def joint_probes(space: SearchSpace) -> list[tuple[str, str, Config]]:
    """The ILP's probes of `space` as (layer, tensor, config): the reference first (layer "",
    tensor "reference"), then each tensor group at each of its joint choices, the rest at the
    reference; a config that two groups give is listed once."""
    ref = reference(space)
    found = {_key(ref): ("", REFERENCE, ref)}
    for group in groups_of(space):
        for option in group.options:
            config = group.apply(ref, option)
            found.setdefault(_key(config), (group.layer, group.tensor, config))
    return list(found.values())


def measurement(evaluator: Evaluator, space: SearchSpace) -> dict[str, Any]:
    """What makes `evaluator`'s metrics of `space`'s candidates what they are (the parts of a
    study's fingerprint that define a measurement)."""
    ev = evaluator
    found = {
        "space": space_fields(space),
        "data": {"rows": ev.data.rows, "sha256": ev.data.sha256},
        "checkpoint_sha256": state_digest(ev.model),
        "model_code": model_code(ev.model),
        "loss_fn": None if ev.loss_fn is None else code_digest(ev.loss_fn),
        "metric_code": {m.name: metric_digest(m) for m in users(ev.extra, ev.metrics)},
    }
    return json.loads(json.dumps(found, default=str))  # as the file gives it back


def probes_digest(probes: Any) -> str:
    """The checksum of the probes as JSON: an edited, truncated or reordered file breaks it."""
    text = json.dumps(probes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Joint:
    """A joint sensitivity result as read: its measurement, its metrics and its probes."""

    path: Path
    measurement: Mapping[str, Any]
    metrics: Sequence[str]
    probes: Sequence[tuple[Config, dict[str, float]]]


def read(path: Path) -> Joint:
    """sensitivity_joint.json, checked whole (its schema, its checksum, every row's shape);
    ConfigError naming the file otherwise."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(str(path), f"is not a readable {FILE} ({err})", file=True) from None
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        got = raw.get("schema_version") if isinstance(raw, dict) else type(raw).__name__
        rule = f"is not a {FILE} of schema_version {SCHEMA_VERSION}"
        raise ConfigError(str(path), rule, got, file=True)
    probes, metrics = raw.get("probes"), raw.get("metrics")
    if probes_digest(probes) != raw.get("probes_sha256"):
        rule = "is damaged: its probes do not match their checksum (edited or cut short?)"
        raise ConfigError(str(path), rule, file=True)
    if not _names(metrics) or not isinstance(raw.get("measurement"), dict):
        raise ConfigError(str(path), "is damaged: no metric names or measurement", file=True)
    if not isinstance(probes, list) or not probes:
        raise ConfigError(str(path), "is damaged: it holds no probes", file=True)
    rows = [_row(p, metrics, path, i) for i, p in enumerate(probes)]
    return Joint(path, raw["measurement"], metrics, rows)


def _names(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _row(
    probe: Any, metrics: Sequence[str], path: Path, at: int
) -> tuple[Config, dict[str, float]]:
    """Probe number `at`'s config and metrics (every one of `metrics`, a number; NaN or inf
    where the probe measured it so: the search then fails that candidate as it would)."""
    config = probe.get("config") if isinstance(probe, dict) else None
    values = probe.get("metrics") if isinstance(probe, dict) else None
    if not (isinstance(config, dict) and isinstance(values, dict)
            and all(isinstance(v, int | str) for v in config.values())
            and all(_number(values.get(m)) for m in metrics)):  # fmt: skip
        rule = f"is damaged: probe {at} lacks its config or a metric"
        raise ConfigError(str(path), rule, file=True)
    return dict(config), {m: float(values[m]) for m in metrics}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def difference(joint: Joint, ctx: SearchContext) -> str | None:
    """Why `joint` does not measure what this search measures, in a few words; None when it
    does."""
    if ctx.settings.train is not None:
        return "its probes are post-training, and this search trains every candidate"
    now = measurement(ctx.evaluator, ctx.space)
    for part, words in PARTS:
        saved = joint.measurement.get(part)
        if saved != now[part]:
            return f"{words}{_first(saved, now[part])}"
    missing = [m for m in ctx.evaluator.metrics if m not in joint.metrics]
    if missing:
        return f"it does not hold {missing[0]}, which this search measures"
    code = joint.measurement.get("metric_code") or {}
    for name, digest in now["metric_code"].items():
        if code.get(name) != digest:
            return f"the code of metric {name} differs"
    return None


def _first(saved: Any, now: Any) -> str:
    """` (at KEY)`: the first entry of two tables that differs (the row counts, for the
    data); empty for plain values."""
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return ""
    if "sha256" in now:  # the data
        if saved.get("rows") == now["rows"]:
            return f" (as many, {now['rows']}, with other values)"
        return f" ({now['rows']} rows here, {saved.get('rows')} in the result)"
    keys = [*now, *(k for k in saved if k not in now)]
    key = next((k for k in keys if saved.get(k) != now.get(k)), None)
    return "" if key is None else f" (at {key})"


def matched(joint: Joint, space: SearchSpace) -> list[tuple[Config, dict[str, float]]]:
    """`joint`'s probes as the space's own configs, when they are exactly the ILP's probes of
    `space`; ConfigError otherwise (a result cut short is not reused in part)."""
    expected = {_key(c): c for _, _, c in joint_probes(space)}
    given = {_key(c): m for c, m in joint.probes}
    lost = len(expected.keys() - given.keys())
    extra = len(given.keys() - expected.keys()) + len(joint.probes) - len(given)
    if lost or extra:
        rule = (f"is damaged: {lost} of the space's {len(expected)} joint probes missing, "
                f"{extra} rows that are not one")  # fmt: skip
        raise ConfigError(str(joint.path), rule, file=True)
    return [(expected[k], m) for k, m in given.items()]


def locate(ctx: SearchContext) -> tuple[Path, bool] | None:
    """The result to reuse and whether it was given: `setup.sensitivity` (a file or its
    folder), else the run directory's own, else None."""
    given = ctx.settings.sensitivity
    if given is not None:
        path = Path(given)
        path = path / FILE if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(str(path), f"does not exist (`bitscout sensitivity --joint` "
                              f"writes {FILE})", file=True)  # fmt: skip
        return path, True
    if ctx.out is not None and (ctx.out / FILE).is_file():
        return ctx.out / FILE, False
    return None


def prime(evaluator: Evaluator, probes: Sequence[tuple[Config, dict[str, float]]]) -> set:
    """Cache each probe's metrics in `evaluator`; the keys this added (a resumed search's
    own trials are already there, and keep theirs)."""
    added: set[Hashable] = set()
    for config, metrics in probes:
        key = evaluator.key(config)
        if key not in evaluator.cache and evaluator.remember(config, metrics):
            added.add(key)
    return added


def reuse(ctx: SearchContext) -> set:
    """The evaluator keys whose metrics a sensitivity result of this search's measurement
    gave (empty when there is none to reuse), primed in the evaluator's cache."""
    found = locate(ctx)
    if found is None:
        return set()
    path, given = found
    joint = read(path)
    problem = difference(joint, ctx)
    if problem is not None:
        if given:
            rule = f"is a sensitivity result of another measurement: {problem}"
            raise ConfigError(str(path), rule, file=True)
        ctx.notify(f"ilp: {path} not reused: {problem}")
        return set()
    added = prime(ctx.evaluator, matched(joint, ctx.space))
    # a resumed search's own trials already hold some: those are not counted as reused
    ctx.notify(f"ilp: {len(added)} probes of {path} reused: none is evaluated again")
    return added
