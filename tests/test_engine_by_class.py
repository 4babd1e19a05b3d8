"""The fast engine's last layer by class (W x^T, logits read in place by the batched metrics)
and the batched accuracy and cross-entropy, against independent references: the candidate
built by `quantize_model` and run by its own forward, torch.argmax and F.cross_entropy."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitscout.evaluate.engine import runner as runner_module
from bitscout.evaluate.evaluator import Evaluator, predict
from bitscout.evaluate.metrics import forward_sums
from bitscout.quant import quantize_model
from bitscout.quant.space import SearchSpace


def _references(logits: torch.Tensor, y: torch.Tensor) -> tuple[list[int], list[float]]:
    """Per candidate of logits [b, g, classes]: correct rows and summed cross-entropy."""
    columns = [logits[:, i] for i in range(logits.shape[1])]
    correct = [int((c.argmax(dim=1) == y).sum()) for c in columns]
    loss = [float(F.cross_entropy(c.double(), y, reduction="sum")) for c in columns]
    return correct, loss


def _logits(b: int, g: int, classes: int, seed: int) -> torch.Tensor:
    """Logits with ties (a coarse grid, ReLU's zeros), and rows holding NaN and infinities."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(b, g, classes, generator=gen) * 4).round().relu() / 4
    z[3, 1, 1] = float("nan")
    z[5, 0, :] = float("nan")
    z[7, 1, 0] = float("inf")
    z[8, 2, 1] = float("-inf")
    z[9, 2, :] = 0.0  # a tie of every class: the first one is predicted
    return z


@pytest.mark.parametrize("classes", [5, 2, 300])
@pytest.mark.parametrize("layout", ["rows", "by class", "sorted", "sorted, no NaN"])
def test_batched_sums_match_argmax_and_cross_entropy(classes, layout):
    b, g = 200, 3
    z = _logits(b, g, classes, seed=classes)
    y = torch.randint(0, classes, (b,), generator=torch.Generator().manual_seed(1))
    y[9] = 0
    if layout.startswith("sorted"):  # the engine's rows: runs of one target (`runs`)
        y = y.sort().values
        z[9, 2, :] = 0.0
        if layout == "sorted, no NaN":
            z = z.nan_to_num(nan=1.0, posinf=30.0, neginf=-30.0)
    if layout == "by class":  # the layout the engine's last layer yields: a view, not a copy
        z = z.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        assert z.stride(0) == 1
    sums = forward_sums(["accuracy", "loss"], z, y)
    correct, loss = _references(z, y)
    assert sums["accuracy"].tolist() == correct
    for got, want in zip(sums["loss"].tolist(), loss, strict=True):
        assert got == pytest.approx(want, rel=1e-12, abs=0, nan_ok=True)


class _Seq(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.seq = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


def _table(data_in: list[int], weight: list[int], bias: list[int]) -> dict:
    return {"name": ["integer"], "data_in_width": data_in, "weight_width": weight,
            "bias_width": bias}  # fmt: skip


TAILS = {
    "relu": lambda: [nn.ReLU()],
    "none": lambda: [],
    "sigmoid, dropout": lambda: [nn.Sigmoid(), nn.Dropout(0.5)],
}
# torch computes a transcendental function one vector at a time and the last few values of a
# tensor on their own, which may differ in the last bit: where a value falls depends on the
# layout (so with the stacked rows too), hence the audit's tolerance for such a tail.
RTOL = {"relu": 1e-12, "none": 1e-12, "sigmoid, dropout": 1e-6}


def _model(tail: str, bias: bool) -> _Seq:
    torch.manual_seed(0)
    layers = [nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5, bias=bias), *TAILS[tail]()]
    return _Seq(*layers).eval()


def _plain(model: nn.Module, space: SearchSpace, index: int, x: torch.Tensor) -> torch.Tensor:
    return predict(quantize_model(model, space.plan(space.config(index))), x)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tail", list(TAILS))
def test_the_last_layer_by_class_gives_the_plain_path_logits_and_metrics(tail, bias, monkeypatch):
    model = _model(tail, bias)
    # 16-bit inputs and weights need float64 sums (`sum_dtype`): the stacked group then runs
    # in float64 and rounds once, as the plain path does.
    tables = {"default": {"name": ["NA"]}, "seq.0": _table([8], [8], [8]),
              "seq.2": _table([4, 16], [2, 4, 16], [4, 8])}  # fmt: skip
    space = SearchSpace(model, "name", tables)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(1500, 12, generator=gen), torch.randint(0, 5, (1500,), generator=gen)
    calls = []
    original = runner_module._by_class
    monkeypatch.setattr(runner_module, "_by_class", lambda *a: calls.append(1) or original(*a))
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"], block_bytes=2**14)
    configs = [space.config(i) for i in range(space.size)]
    results = evaluator.evaluate_many(configs, cache=False)
    assert calls, "the last layer did not run by class"
    runner = evaluator._runner
    assert runner is not None
    for index, (got, _) in enumerate(results):
        plain = _plain(model, space, index, x)
        correct, loss = _references(plain.unsqueeze(1), y)
        assert got["accuracy"] == correct[0] / len(y)
        assert got["loss"] == pytest.approx(loss[0] / len(y), rel=RTOL[tail], abs=0)
    if RTOL[tail] > 1e-12:
        return
    candidates = [runner.candidate(evaluator.key(c), evaluator.plan(c)) for c in configs]
    groups = [*runner.groups(candidates), (len(runner.stages) - 1, [space.size - 1])]
    assert any(len(members) > 1 for _, members in groups)  # stacked, and one alone
    order = sorted(range(len(y)), key=lambda i: (int(y[i]), i))  # the runner's rows, by target
    with torch.inference_mode():
        for stage, members in groups:
            logits = torch.cat(list(runner.logits(stage, [candidates[i] for i in members])))
            for column, index in enumerate(members):
                assert torch.equal(logits[:, column], _plain(model, space, index, x)[order])


def test_a_last_layer_followed_by_batchnorm_runs_by_rows(monkeypatch):
    torch.manual_seed(0)
    model = _Seq(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5), nn.BatchNorm1d(5)).eval()
    space = SearchSpace(model, "name", {"default": {"name": ["NA"]},
                                        "seq.2": _table([4, 8], [2, 8], [8])})  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(600, 12, generator=gen), torch.randint(0, 5, (600,), generator=gen)
    monkeypatch.setattr(runner_module, "_by_class", lambda *a: pytest.fail("ran by class"))
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"])
    for index, (got, _) in enumerate(evaluator.evaluate_many(
        [space.config(i) for i in range(space.size)]
    )):  # fmt: skip
        correct, loss = _references(_plain(model, space, index, x).unsqueeze(1), y)
        assert got["accuracy"] == correct[0] / len(y)
        assert got["loss"] == pytest.approx(loss[0] / len(y), rel=1e-12, abs=0)
