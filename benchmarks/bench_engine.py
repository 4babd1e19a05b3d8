"""The evaluation engine against this machine's roofline, and its memory over a long search.

    python benchmarks/bench_engine.py            # seed space on 166,000 rows, jsc-s 20,736
    python benchmarks/bench_engine.py --quick    # a smoke run (seconds)
    python benchmarks/bench_engine.py --only 1   # the seed space alone

1. The seed space (jsc-tiny, 48 candidates) on 166,000 random rows: the engine's ms per
   candidate one at a time (TPE's path, random order) and in consecutive chunks (brute
   force's), the audit off: the engine alone. Beside them, measured in the same run on one
   thread: the GEMM rate (a 2048^3 torch.mm), the copy bandwidth (a 64 MB copy, bytes read
   plus written) and a candidate's floor, the larger of its multiply-adds (rows x 16 x 5) over
   the GEMM rate and its unavoidable bytes (each row's 16 inputs read and 5 logits written,
   float32) over the bandwidth. Also the float64 exp of the loss's 5 classes per row, which
   no exact cross-entropy avoids, as a second floor. Then where a candidate's time goes,
   stage by stage (`stages_ms`): the last layer (stacked GEMM and ReLU), the largest logit
   of each row, the runs of one target, accuracy, cross-entropy, and the rest (grouping,
   Python, the metrics' dicts) as the engine's total less those.
2. jsc-s by name, 4 Linear layers x 12 choices (20,736 candidates), the Evaluator alone in
   chunks of 64 as brute force hands them over: resident memory (RSS) after 1,000 candidates
   and after all, uncached (`cache=False`, a chunked brute force) and cached (an unchunked
   one: every candidate's metrics kept).

Every timing is the best of 3, the spread printed beside it; the load average too.
"""

import argparse
import functools
import os
import random
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bitscout.evaluate import batched
from bitscout.evaluate.audit import Audit
from bitscout.evaluate.evaluator import Evaluator, one_thread
from bitscout.quant.space import parse_space
from bitscout.zoo.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SEED_METRICS = ["accuracy", "loss", "average_bitwidth", "model_size", "flops"]
CHUNK = 64  # candidates per evaluate_many call, as the brute-force strategy batches them
REPEATS = 3


def best_of(fn: Callable[[], float], repeats: int = REPEATS) -> tuple[float, float]:
    """The smallest of `repeats` results of `fn` and their spread (largest / smallest)."""
    found = [fn() for _ in range(repeats)]
    return min(found), max(found) / min(found)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gemm_rate() -> float:
    """Multiply-adds per second of a large single-thread float32 matrix product."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    return 2048**3 / best_of(lambda: seconds(lambda: torch.mm(a, b)))[0]


def copy_bandwidth() -> float:
    """Bytes per second read and written by a 64 MB single-thread tensor copy."""
    src = torch.randn(2**24)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * src.numel() * 4 / best_of(lambda: seconds(lambda: dst.copy_(src)))[0]


def exp_seconds(values: int) -> float:
    """Seconds of numpy's float64 exp over `values` values (the loss's exp, per candidate)."""
    x = -np.random.default_rng(0).random(2**20)
    out = np.empty_like(x)
    per_value = best_of(lambda: seconds(lambda: np.exp(x, out=out)))[0] / len(x)
    return per_value * values


def _randomized(model: nn.Module) -> nn.Module:
    """BatchNorm with running statistics that do something (fresh ones are the identity)."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _data(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(rows, 16, generator=gen), torch.randint(0, 5, (rows,), generator=gen)


def seed_evaluator(rows: int) -> tuple[Evaluator, list]:
    torch.manual_seed(0)
    model = _randomized(build_model("jsc-tiny"))
    doc = tomllib.loads((ROOT / "examples" / "jsc_tiny_lab3.toml").read_text())
    space = parse_space(doc["search"]["search_space"], model)
    ev = Evaluator(model, space, _data(rows), SEED_METRICS, audit=Audit(rate=0))
    return ev, [space.config(i) for i in range(space.size)]


def engine_ms(ev: Evaluator, configs: list, chunked: bool) -> tuple[float, float]:
    """(best ms per candidate, spread) over the whole space, nothing cached."""
    if chunked:
        calls = [configs[i : i + CHUNK] for i in range(0, len(configs), CHUNK)]
    else:
        calls = [[c] for c in random.Random(0).sample(configs, len(configs))]

    def once() -> float:
        return 1000 * seconds(lambda: [ev.evaluate_many(c, cache=False) for c in calls])

    once()  # warm: the cached weights and inputs, the first touch of buffers
    ms, spread = best_of(once)
    return ms / len(configs), spread


STAGES = ("last layer: GEMM + ReLU", "largest logit per row", "runs of one target",
          "accuracy", "cross-entropy")  # fmt: skip
# What each of STAGES after the first computes, on one block (`batched`).
STEPS: tuple[Callable[[batched.ClassMajor], object], ...] = (
    lambda part: part.largest, lambda part: part.runs, batched.correct, batched.cross_entropy,
)  # fmt: skip


def timed(blocks: Iterator[torch.Tensor]) -> Iterator[tuple[float, torch.Tensor]]:
    """Each block of `blocks` with the seconds spent making it."""
    while True:
        began = time.perf_counter()
        block = next(blocks, None)
        if block is None:
            return
        yield time.perf_counter() - began, block


def stages_ms(ev: Evaluator, configs: list, chunked: bool) -> dict[str, float]:
    """ms per candidate in each of STAGES over the whole space, as `engine_ms` runs it."""
    runner = ev._runner
    assert runner is not None and runner.y is not None
    keys = [ev.key(c) for c in configs]
    candidates = [runner.candidate(k, ev.plan(c)) for k, c in zip(keys, configs, strict=True)]
    last = len(runner.stages) - 1
    groups = runner.groups(candidates) if chunked else [(last, [i]) for i in range(len(keys))]
    spent = dict.fromkeys(STAGES, 0.0)
    targets = runner.y.numpy()
    with torch.inference_mode():
        for stage, members in groups:
            start = 0
            for made, block in timed(runner.logits(stage, [candidates[i] for i in members])):
                spent[STAGES[0]] += made
                z = block.numpy().transpose(1, 2, 0)  # the layout forward_sums reads
                part = batched.ClassMajor(z, targets[start : start + len(block)])
                start += len(block)
                for label, step in zip(STAGES[1:], STEPS, strict=True):
                    spent[label] += seconds(functools.partial(step, part))
    return {label: 1000 * value / len(keys) for label, value in spent.items()}


def item1(rows: int) -> None:
    with one_thread():
        rate, bandwidth = gemm_rate(), copy_bandwidth()
        macs, unavoidable = rows * 16 * 5, rows * (16 + 5) * 4
        floor = 1000 * max(macs / rate, unavoidable / bandwidth)
        exp_ms = 1000 * exp_seconds(rows * 5)
        ev, configs = seed_evaluator(rows)
        one = engine_ms(ev, configs, chunked=False)
        many = engine_ms(ev, configs, chunked=True)
        split = {chunked: min((stages_ms(ev, configs, chunked) for _ in range(REPEATS)),
                              key=lambda found: sum(found.values()))
                 for chunked in (False, True)}  # fmt: skip
    print(f"1. seed space, jsc-tiny, 48 candidates, {rows:,} rows, one thread")
    row("GEMM rate (2048^3 torch.mm)", f"{rate / 1e9:.1f} G MAC/s")
    row("copy bandwidth (64 MB, read + written)", f"{bandwidth / 1e9:.1f} GB/s")
    row("floor: max(MACs / rate, bytes / bandwidth)", f"{floor:.2f} ms/cand",
        f"{macs / 1e6:.1f} M MACs, {unavoidable / 1e6:.1f} MB")  # fmt: skip
    row("float64 exp of 5 logits a row (exact loss)", f"{exp_ms:.2f} ms/cand",
        f"{exp_ms / floor:.1f}x the floor")  # fmt: skip
    for label, (ms, spread) in (("one at a time (TPE)", one), ("consecutive chunks", many)):
        target = " (target <= 3x)" if label.startswith("consecutive") else ""
        row(f"engine, {label}", f"{ms:.2f} ms/cand",
            f"{ms / floor:.1f}x the floor{target}; spread {spread:.2f}")  # fmt: skip
    print("  where a candidate's time goes, ms (the fastest of 3 runs): one at a time, chunks")
    for label in STAGES:
        row(f"  {label}", f"{split[False][label]:.2f}  {split[True][label]:.2f}")
    for chunked, (ms, _) in ((False, one), (True, many)):
        rest = ms - sum(split[chunked].values())
        kind = "chunks" if chunked else "one at a time"
        row(f"  the rest ({kind}): grouping, Python, dicts", f"{rest:.2f}")


def jsc_s_evaluator(rows: int, quick: bool) -> tuple[Evaluator, list]:
    torch.manual_seed(1)
    model = _randomized(build_model("jsc-s"))
    layer = {"name": ["integer"], "data_in_width": [4, 8] if quick else [4, 8, 16],
             "weight_width": [2, 8] if quick else [2, 4, 8, 16], "bias_width": [8]}  # fmt: skip
    seed = {"default": {"config": {"name": ["NA"]}}}
    seed |= {f"seq_blocks_{i}": {"config": layer} for i in (2, 5, 7, 9)}
    space = parse_space({"setup": {"by": "name"}, "seed": seed}, model)
    ev = Evaluator(model, space, _data(rows), SEED_METRICS)
    return ev, [space.config(i) for i in range(space.size)]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(x for x in f if x.startswith("VmRSS:")).split()[1]) / 1024


def rss_growth(ev: Evaluator, configs: list, cache: bool) -> tuple[float, float, float]:
    """(RSS after the first 1,000 candidates, after all, candidates per second)."""
    mark = min(1000, len(configs) // 4)
    at_mark = 0.0
    start = time.perf_counter()
    for first in range(0, len(configs), CHUNK):
        ev.evaluate_many(configs[first : first + CHUNK], cache=cache)
        if first < mark <= first + CHUNK:
            at_mark = rss_mb()
    rate = len(configs) / (time.perf_counter() - start)
    return at_mark, rss_mb(), rate


def item2(rows: int, quick: bool) -> None:
    ev, configs = jsc_s_evaluator(rows, quick)
    ev.evaluate_many(configs[:CHUNK], cache=False)  # warm: weights quantized once per format
    print(f"2. jsc-s by name, {len(configs):,} candidates in chunks of {CHUNK}, {rows:,} rows, "
          f"the Evaluator alone; RSS {rss_mb():.0f} MB before")  # fmt: skip
    with one_thread():
        for cache, label in ((False, "uncached (chunked brute force)"),
                             (True, "cached (unchunked brute force)")):  # fmt: skip
            ev.cache.clear()
            first, last, rate = rss_growth(ev, configs, cache)
            row(f"RSS {label}", f"{first:.0f} -> {last:.0f} MB",
                f"growth {last - first:+.1f} MB (target < 50 MB); {rate:.0f} cand/s")  # fmt: skip


def row(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<48} {value:>18}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, for a smoke run")
    parser.add_argument("--rows", type=int, help="seed-space rows (default 166,000)")
    parser.add_argument("--only", type=int, choices=[1, 2], help="run only this item")
    args = parser.parse_args()
    rows = args.rows or (16_600 if args.quick else 166_000)
    print(f"bitscout engine benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    if args.only in (None, 1):
        item1(rows)
    if args.only in (None, 2):
        item2(1_660 if args.quick else 16_600, args.quick)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
