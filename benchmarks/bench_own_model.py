"""Per-candidate time on examples/own_model: which models take the fast engine, which the
plain path, and what each costs, measured in one run.

    python benchmarks/bench_own_model.py [--candidates 200] [--repeats 3]

- the example's residual MLP (LayerNorm, GELU, residual adds): not a chain, plain path;
- its chain twin (the same Linear, LayerNorm and GELU layers without the residual adds): the
  fast engine, and the same model forced through the plain path, as the baseline.
Candidates are random configs of the example's space (6 Linear layers, 46,656 candidates)
on its 360 validation rows, evaluated one at a time (TPE's path) and in consecutive chunks of
64 (brute force's path).
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant.space import SearchSpace
from bitscout.zoo.train import TrainOptions, train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"
sys.path.insert(0, str(EXAMPLE))
from net import build, load  # noqa: E402

LAYER = {"name": ["integer"], "data_in_width": [6, 8], "data_in_frac_width": [4],
         "weight_width": [3, 4, 8], "bias_width": [8], "bias_frac_width": [5]}  # fmt: skip
METRICS = ["accuracy", "loss", "average_bitwidth", "model_size", "bops", "flops"]


class Chain(nn.Module):
    """The residual MLP's layers in one chain (no residual adds)."""

    def __init__(self, residual: nn.Module) -> None:
        super().__init__()
        layers = [residual.embed]
        for block in residual.blocks:
            layers += [block.norm, block.fc1, block.act, block.fc2]
        self.seq = nn.Sequential(*layers, residual.norm, residual.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


def per_candidate_ms(evaluator: Evaluator, configs: list, chunk: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(configs), chunk):
        evaluator.evaluate_many(configs[i : i + chunk])
    return 1000 * (time.perf_counter() - start) / len(configs)


def measure(model: nn.Module, data: tuple, n: int, chunk: int, plain: bool) -> float:
    space = SearchSpace(model, "name", {"default": LAYER})
    indexes = random.Random(0).sample(range(space.size), n)
    if chunk > 1:  # consecutive candidates, as brute force evaluates them
        start = random.Random(1).randrange(space.size - n)
        indexes = list(range(start, start + n))
    evaluator = Evaluator(model, space, data, METRICS)
    if plain:
        evaluator._runner = None  # the reference path: every candidate built and run whole
    return per_candidate_ms(evaluator, [space.config(i) for i in indexes], chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load(seed=0)
    residual = train(build(width=32, blocks=2), data["train"], TrainOptions(epochs=5))
    x, y = (torch.from_numpy(a) for a in data["val"])
    cases = [("residual MLP (plain path)", residual, False),
             ("chain twin, fast engine", Chain(residual), False),
             ("chain twin, plain path (baseline)", Chain(residual), True)]  # fmt: skip
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}, "
          f"{args.candidates} candidates, {len(y)} rows, median of {args.repeats}")  # fmt: skip
    print("| model | one at a time, ms/candidate | chunks of 64, ms/candidate |\n|---|---|---|")
    for name, model, plain in cases:
        times = [
            statistics.median(
                measure(model, (x, y), args.candidates, chunk, plain) for _ in range(args.repeats)
            )
            for chunk in (1, 64)
        ]
        print(f"| {name} | {times[0]:.2f} | {times[1]:.2f} |")


if __name__ == "__main__":
    main()
