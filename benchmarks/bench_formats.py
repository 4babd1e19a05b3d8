"""Per-candidate time of a mixed-format search against an integer-only one of the same size.

    python benchmarks/bench_formats.py [--repeats 3]

Both spaces have 24 candidates per Linear layer of the digits MLP (13,824 in all, 360
validation rows): examples/digits_formats.toml (integer, minifloat_ieee, log, block_fp) and
the same file with integer only (6 widths x 4 frac widths). The evaluator scores the first
`--candidates` of each in brute force's order and in random order (TPE's path, one at a
time), `--repeats` times; the table shows medians, the spread and the ratio to integer-only.
"""

import argparse
import copy
import os
import random
import statistics
import time
import tomllib
from pathlib import Path

import torch

from bitscout.cli.build import load_data, make_model
from bitscout.cli.config import Config
from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["accuracy", "loss", "average_bitwidth", "model_size_bits", "bops"]


def spaces() -> dict[str, dict]:
    doc = tomllib.loads((ROOT / "examples" / "digits_formats.toml").read_text())
    mixed = doc["search"]["search_space"]
    integer = copy.deepcopy(mixed)
    integer["seed"]["default"]["config"] = {
        "name": ["integer"], "weight_width": [4, 5, 6, 7, 8, 9], "weight_frac_width": [2, 3, 4, 5],
        "data_in_width": [8], "data_in_frac_width": [4],
    }  # fmt: skip
    return {"integer only": integer, "mixed formats": mixed}


def per_candidate_ms(evaluator: Evaluator, configs: list, one_at_a_time: bool) -> float:
    evaluator.cache.clear()
    start = time.perf_counter()
    if one_at_a_time:
        for config in configs:
            evaluator.evaluate(config)
    else:
        for i in range(0, len(configs), 64):
            evaluator.evaluate_many(configs[i : i + 64])
    return (time.perf_counter() - start) / len(configs) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = Config(model="mlp", dataset="digits", seed=0)
    data = load_data(cfg)
    model = make_model(cfg, data).eval()
    rows: dict[str, list[list[float]]] = {}
    for name, table in spaces().items():
        space = parse_space(table, model)
        evaluator = Evaluator(model, space, (data.x_val, data.y_val), METRICS)
        ordered = [space.config(i) for i in range(min(args.candidates, space.size))]
        scattered = [space.config(i) for i in random.Random(0).sample(range(space.size),
                                                                      len(ordered))]  # fmt: skip
        repeat = range(args.repeats)
        rows[name] = [
            [per_candidate_ms(evaluator, ordered, False) for _ in repeat],
            [per_candidate_ms(evaluator, scattered, True) for _ in repeat],
        ]
        print(f"{name}: {space.size} candidates", flush=True)
    base = rows["integer only"]
    print(f"\nload average {os.getloadavg()[0]:.2f}; ms per candidate, median (min-max) of "
          f"{args.repeats}; ratio to integer only")  # fmt: skip
    print("| space | brute-force order | ratio | random order, one at a time | ratio |")
    print("|---|---|---|---|---|")
    for name, (chunks, single) in rows.items():
        cells = []
        for runs, ref in ((chunks, base[0]), (single, base[1])):
            med = statistics.median(runs)
            cells += [f"{med:.3f} ({min(runs):.3f}-{max(runs):.3f})",
                      f"{med / statistics.median(ref):.2f}"]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
