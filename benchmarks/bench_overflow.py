"""What `overflow_rate` costs: the evaluation time per candidate with and without it.

    python benchmarks/bench_overflow.py            # the seed space, 166,000 validation rows
    python benchmarks/bench_overflow.py --quick    # a smoke run on 16,600 rows (seconds)

The seed space (examples/jsc_tiny_lab3.toml: jsc-tiny, 48 candidates) on `fake` data, and
jsc-s by name (four Linear layers, 2 input x 2 weight widths each): ms per candidate
of an Evaluator scoring the metrics a search reports (`study.run.REPORTED`), with and without
`overflow_rate`, one candidate at a time in a shuffled order (as TPE asks) and in consecutive
chunks (as brute force asks). Each variant is built afresh and run `--repeats` times,
alternating; the ratios of the medians and of the fastest runs are printed (the budget: at
most 1.10). The jsc-s space is always its quick form (16 candidates). Timings
are wall-clock; the load average is printed because a busy core slows every number down.
"""

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench_support import CHUNK, jsc_s_doc, prepared, seed_doc, write

from bitscout.evaluate.evaluator import Evaluator
from bitscout.study.run import REPORTED

BASE = [m for m in REPORTED if m != "overflow_rate"]


def ms_per_candidate(setup: tuple, metrics: list[str], many: bool) -> float:
    """ms per candidate of a fresh Evaluator over the whole space, nothing cached."""
    model, space, x, y = setup
    ev = Evaluator(model, space, (x, y), metrics)
    configs = [space.config(i) for i in range(space.size)]
    start = time.perf_counter()
    if many:  # consecutive chunks, as brute force hands them over
        for i in range(0, len(configs), CHUNK):
            ev.evaluate_many(configs[i : i + CHUNK], cache=False)
    else:
        random.Random(0).shuffle(configs)  # TPE's order is anything but consecutive
        for config in configs:
            ev.evaluate_many([config], cache=False)
    return 1000 * (time.perf_counter() - start) / len(configs)


def compare(title: str, setup: tuple, repeats: int) -> None:
    print(title)
    print(f"  {'order':<12}{'without ms':>12}{'with ms':>12}{'ratio':>8}{'min ratio':>11}"
          "   load average")  # fmt: skip
    for many, order in ((False, "one by one"), (True, "chunks")):
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(repeats):  # alternating, so a change in load hits both alike
            times["without"].append(ms_per_candidate(setup, BASE, many))
            times["with"].append(ms_per_candidate(setup, [*BASE, "overflow_rate"], many))
        without, with_ = (statistics.median(times[k]) for k in ("without", "with"))
        fastest = min(times["with"]) / min(times["without"])  # the least disturbed runs
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"  {order:<12}{without:>12.3f}{with_:>12.3f}{with_ / without:>8.3f}"
              f"{fastest:>11.3f}   {load}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16,600 validation rows")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant")
    args = parser.parse_args()
    n_val = 16_600 if args.quick else 166_000
    print(f"metrics without: {', '.join(BASE)}; with: + overflow_rate; repeats {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        seed = prepared(write(Path(tmp) / "seed.toml", seed_doc(n_val)), Path(tmp) / "seed")
        compare(f"seed space, jsc-tiny, 48 candidates, {n_val:,} rows", seed, args.repeats)
        doc = jsc_s_doc(n_val, quick=True)
        jsc_s = prepared(write(Path(tmp) / "jsc_s.toml", doc), Path(tmp) / "jsc_s")
        compare(f"jsc-s by name, 16 candidates, {n_val:,} rows", jsc_s, args.repeats)


if __name__ == "__main__":
    main()
