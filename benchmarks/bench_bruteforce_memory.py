"""A brute force over a million candidates in bounded memory: candidates per second and the
resident memory at 10**4, 10**5 and 10**6 candidates, then the time to write the report.

    python benchmarks/bench_bruteforce_memory.py [--out DIR] [--rows 2000] [--candidates N]

jsc-s on `fake` data shaped like JSC (16 features, 5 classes; no JSC file can be bundled),
each of its 5 Linear layers over input widths 4/8 x weight widths 2/4/8/16 x bias widths
4/8: 16**5 = 1,048,576 candidates, `--rows` validation rows. The search runs in this process
(`bitscout search` as the command runs it) while a thread samples the process's RSS; the
baseline for the memory growth is the RSS at the first 10**4 candidates. `--candidates` stops
earlier (n_trials), for a quick look.
"""

import argparse
import os
import threading
import time
from pathlib import Path

import tomli_w

from bitscout.cli import main
from bitscout.study.strategies import base

MARKS = (10_000, 100_000, 1_000_000)
LAYER = {
    "name": ["integer"],
    "data_in_width": [4, 8], "data_in_frac_width": ["NA"],
    "weight_width": [2, 4, 8, 16], "weight_frac_width": ["NA"],
    "bias_width": [4, 8], "bias_frac_width": ["NA"],
}  # fmt: skip


def config(rows: int, candidates: int | None) -> dict:
    setup = {"sum_scaled_metrics": True, "direction": "maximize"}
    if candidates:
        setup["n_trials"] = candidates
    return {
        "model": "jsc-s", "dataset": "fake", "max_epochs": 2, "batch_size": 256,
        "learning_rate": 1e-2, "seed": 0,
        "dataset_options": {"num_samples": rows * 5, "num_features": 16, "num_classes": 5},
        "search": {
            "search_space": {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}},
            "strategy": {
                "name": "bruteforce", "setup": setup,
                "metrics": {"accuracy": {"scale": 2.0, "direction": "maximize"},
                            "average_bitwidth": {"scale": -0.1, "direction": "minimize"}},
            },
        },
    }  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


class Meter:
    """Counts evaluated candidates (through SearchContext.score_many) and notes the time and
    RSS when each mark is passed; `done` is when the last candidate was scored."""

    def __init__(self) -> None:
        self.count = 0
        self.seen: dict[int, tuple[float, float]] = {}
        self.done = 0.0
        self.start = time.perf_counter()
        score_many = base.SearchContext.score_many

        def counted(ctx: base.SearchContext, configs: list, **kw: object) -> list:
            out = score_many(ctx, configs, **kw)
            self.count += len(configs)
            self.done = time.perf_counter()
            for mark in MARKS:
                if self.count >= mark and mark not in self.seen:
                    self.seen[mark] = (self.done - self.start, rss_mb())
            return out

        base.SearchContext.score_many = counted  # type: ignore[method-assign]


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-million")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--candidates", type=int)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "million.toml"
    cfg.write_text(tomli_w.dumps(config(args.rows, args.candidates)))
    assert main(["train", str(cfg), "--out", str(out / "train")]) == 0
    peak = [rss_mb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            peak[0] = max(peak[0], rss_mb())

    threading.Thread(target=sample, daemon=True).start()
    meter = Meter()
    load = os.getloadavg()[0]
    argv = ["search", str(cfg), "--out", str(out / "run"), "--quiet", "--load",
            str(out / "train" / "model.pt")]  # fmt: skip
    assert main(argv) == 0
    end = time.perf_counter()
    stop.set()
    print(f"\nload average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
          f"{args.rows} validation rows; {meter.count} candidates")  # fmt: skip
    print("| candidates | seconds | candidates/s since the previous mark | RSS MB | growth MB |")
    print("|---|---|---|---|---|")
    last_t, last_n = 0.0, 0
    base_rss = meter.seen.get(MARKS[0], (0.0, 0.0))[1]
    for mark, (t, rss) in sorted(meter.seen.items()):
        rate = (mark - last_n) / max(t - last_t, 1e-9)
        print(f"| {mark:,} | {t:.1f} | {rate:,.0f} | {rss:.0f} | {rss - base_rss:+.0f} |")
        last_t, last_n = t, mark
    size = (out / "run" / "trials.csv").stat().st_size / 1e6
    print(f"\nafter the last candidate: outputs and report {end - meter.done:.1f} s; "
          f"peak RSS {peak[0]:.0f} MB; trials.csv {size:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main_()
