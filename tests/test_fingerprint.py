"""study/fingerprint.py: what defines a measurement, hashed the same in every process and
different for every change that alters what a candidate measures."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from bitscout.errors import ConfigError
from bitscout.study.fingerprint import code_digest, model_code, state_digest
from bitscout.study.store.storage import _check


def _digest(fn) -> str:
    return code_digest(fn).rpartition(":")[2]


def test_code_differs_by_constant_name_read_default_and_closure():
    scale = 2.0
    other = 3.0
    assert _digest(lambda o, t: 1.0 * (o - t)) != _digest(lambda o, t: 100.0 * (o - t))
    assert _digest(lambda o: torch.sin(o)) != _digest(lambda o: torch.cos(o))  # only a name
    assert _digest(lambda o, k=1: o * k) != _digest(lambda o, k=2: o * k)
    assert _digest(lambda o: o * scale) != _digest(lambda o: o * other)  # only a cell's value
    assert _digest(lambda o: o * scale) == _digest(lambda o: o * scale)


def test_partials_and_loss_modules_are_told_apart_by_their_arguments():
    def loss(o, t, weight):
        return weight * (o - t)

    assert _digest(functools.partial(loss, weight=1.0)) != _digest(
        functools.partial(loss, weight=2.0)
    )
    assert _digest(nn.CrossEntropyLoss()) != _digest(nn.CrossEntropyLoss(label_smoothing=0.1))
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]))
    assert _digest(weighted) != _digest(nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0])))


def test_the_digest_is_the_same_in_every_process():
    """Python seeds string hashing per process: a frozenset constant (`x in {...}`) must not
    make two workers of one study disagree."""
    script = textwrap.dedent("""
        from bitscout.study.fingerprint import code_digest
        def fn(x):
            return 1.0 if x in {"alpha", "beta", "gamma", "delta"} else [y for y in range(x)]
        print(code_digest(fn))
    """)
    seen = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, check=True)  # fmt: skip
        seen.add(run.stdout.strip())
    assert len(seen) == 1, seen


def test_the_state_covers_every_buffer_and_its_dtype():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    before = state_digest(model)
    model[1].num_batches_tracked += 1  # a 0-dim integer buffer
    assert state_digest(model) != before
    half = nn.Sequential(nn.Linear(3, 2)).to(torch.bfloat16)
    assert state_digest(half) != state_digest(half.float())
    model.register_buffer("offset", torch.zeros(1), persistent=False)
    changed = state_digest(model)
    model.offset += 1
    assert state_digest(model) != changed


def test_the_model_code_records_plain_attributes_and_hooks():
    model = nn.Sequential(nn.Linear(3, 2), nn.LeakyReLU(0.1))
    before = model_code(model)
    model[1].negative_slope = 0.2
    assert model_code(model)["1"]["attributes"] != before["1"]["attributes"]
    model[1].negative_slope = 0.1
    assert model_code(model) == before
    model[0].register_forward_hook(lambda m, i, o: o * 2)
    assert model_code(model)["0"]["hooks"] != before["0"]["hooks"]
    json.dumps(model_code(model))  # the store keeps it as JSON


@pytest.mark.parametrize(
    ("settled", "mine", "named"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, "did not record 'b'"),
        ({"a": 1}, {"a": 2, "b": 2}, "did not record 'b'"),  # an earlier bitscout: said first
        ({"space": {"x.w": [8], "by": "name"}}, {"space": {"x.w": [2], "by": "name"}},
         "space['x.w'] = [8], this search has [2]"),
        ({"m": {"fc": {"class": "A"}}}, {"m": {"fc": {"class": "B"}}}, "m['fc']['class'] = 'A'"),
        ({"m": {"fc": 1}}, {"m": {"fc": 1, "new": 2}}, "m['new'] = None, this search has 2"),
    ],
)  # fmt: skip
def test_a_missing_or_different_key_is_refused_naming_it(settled, mine, named):
    with pytest.raises(ConfigError) as err:
        _check("s", settled, mine)
    assert named in str(err.value), str(err.value)


def test_keys_only_the_study_has_are_not_this_search_s():
    """An earlier study's `objective` (now left out: it ranks, it does not measure)."""
    _check("s", {"a": 1, "objective": [["accuracy", 1.0, "maximize"]]}, {"a": 1})
