"""How fast bitscout searches, against a MASE-style evaluation measured in the same run.

    python benchmarks/bench_search.py            # the full benchmark (a few minutes)
    python benchmarks/bench_search.py --quick    # a smoke run on small data (seconds)
    python benchmarks/bench_search.py --profile  # also cProfile the TPE search

1. The seed space (jsc-tiny, 48 candidates) on `fake` data with 166,000 validation samples:
   per-candidate ms of a MASE-style pipeline (deep copy, layer swap, DataLoader with batches
   of 512, per-batch metric accumulation), of the plain full-batch pass, and of bitscout's
   Evaluator (one candidate at a time as TPE asks, and consecutive candidates as brute force
   asks); the whole search's seconds; the whole `bitscout search` command in a subprocess.
2. The same with `latency` added.
3. jsc-s by name over four Linear layers with 12 choices each (20,736 candidates), brute
   force: candidates per second, peak RSS after 1,000 and after all candidates.
4. TPE on the seed space: the sampler's share of the search's wall time.

Timings are wall-clock on this machine; the load average is printed because another busy
process on a 2-core machine slows every number down.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch
from bench_support import (
    CHUNK,
    LATENCY,
    SEED_METRICS,
    Timed,
    bruteforce_rss,
    command_s,
    import_s,
    jsc_s_doc,
    mase_style,
    plain,
    prepared,
    quiet,
    seed_doc,
    write,
)

from bitscout.evaluate import evaluator as evaluate
from bitscout.evaluate.evaluator import Evaluator


def ms_per(fn: Callable, items: Sequence) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return 1000 * (time.perf_counter() - start) / len(items)


def baseline_ms(fn: Callable, items: Sequence) -> float:
    """The faster of torch's default threads (as MASE runs) and one thread (as bitscout runs):
    on a busy 2-core machine a second OpenMP thread can slow small operations down a lot."""
    fastest = ms_per(fn, items)
    with evaluate.one_thread():
        return min(fastest, ms_per(fn, items))


def evaluator_ms(setup: tuple, metrics: list[str], many: bool, **options) -> tuple[float, float]:
    """(ms per candidate over the whole space, ms to build the Evaluator)."""
    model, space, x, y = setup
    start = time.perf_counter()
    ev = Evaluator(model, space, (x, y), metrics, latency=LATENCY, **options)
    built = 1000 * (time.perf_counter() - start)
    configs = [space.config(i) for i in range(space.size)]
    if many:  # consecutive chunks, as brute force hands them over
        chunks = [configs[i : i + CHUNK] for i in range(0, len(configs), CHUNK)]
        return ms_per(ev.evaluate_many, chunks) * len(chunks) / len(configs), built
    random.Random(0).shuffle(configs)  # TPE's order is anything but consecutive
    return ms_per(ev.evaluate, configs), built


def floor_ms(n_rows: int, repeats: int = 3) -> float:
    """This machine's floor for the seed space per candidate: its 48 candidates' Linear(16, 5)
    as stacked matrix products (per input width and class) of all 16 weight/bias choices,
    the ReLU and the metrics (accuracy from the largest logit, loss from logsumexp) as
    elementwise operations over the 5 class slices, all into preallocated tensors, on one
    thread. Quantizing isn't timed: only the arithmetic a candidate cannot avoid."""
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(n_rows, 16, generator=g) for _ in range(3)]
    w, b = torch.randn(5, 16, 16, 1, generator=g), torch.randn(5, 16, 1, 1, generator=g)
    y = torch.randint(0, 5, (n_rows,), generator=g)
    z = torch.empty(5, 16, n_rows, 1)  # class-major: each class a contiguous [16, n] slice
    top, s, t, picked = (torch.empty(16, n_rows, 1) for _ in range(4))
    hit = torch.empty(16, n_rows, 1, dtype=torch.bool)
    onehot = [(y == c).view(1, -1, 1).float() for c in range(5)]

    def once() -> None:
        for xi in x:
            for c in range(5):
                torch.matmul(xi, w[c], out=z[c])
            z.add_(b).relu_()
            torch.amax(z, dim=0, out=top)
            s.zero_(), picked.zero_()
            for c in range(5):
                torch.sub(z[c], top, out=t)
                s.add_(t.exp_())
                picked.addcmul_(z[c], onehot[c])
            torch.eq(picked, top, out=hit)  # the target's logit is the largest
            float(hit.sum()), float((s.log_() + top - picked).sum())

    with evaluate.one_thread():
        once()  # warm: the first touch of the preallocated pages
        return min(ms_per(lambda _: once(), [None]) for _ in range(repeats)) / 48


def per_candidate(setup: tuple, baseline_n: int, latency: bool) -> dict[str, float]:
    model, space, x, y = setup
    profile = Evaluator(model, space, (x[:1], y[:1]), []).profile
    some = [space.config(i) for i in random.Random(1).sample(range(space.size), baseline_n)]
    metrics = SEED_METRICS + (["latency"] if latency else [])
    one, built = evaluator_ms(setup, metrics, many=False)
    times = {
        "mase": baseline_ms(lambda c: mase_style(model, space, c, x, y, profile, latency), some),
        "plain": baseline_ms(lambda c: plain(model, space, c, x, y, profile, latency), some),
        "one": one,
        "many": evaluator_ms(setup, metrics, many=True)[0],
        "built": built,
        "floor": floor_ms(len(y)),
    }
    if latency:  # every candidate timed on its own, as without sharing
        times["unshared"] = evaluator_ms(setup, metrics, many=True, share_latency=False)[0]
    return times


# --- whole searches -------------------------------------------------------------------------


TPE_METHODS = [
    (optuna.samplers.TPESampler, m)
    for m in (
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
    )
]


def search(config: Path, out: Path, ckpt: Path, *extra: str, profile: bool = False) -> dict:
    """One in-process `bitscout search`: its summary, and the seconds in the sampler and in
    the evaluator."""
    argv = ["search", str(config), "--load", str(ckpt), "--out", str(out), *extra]
    evals = [(Evaluator, "evaluate_many")]
    with Timed(TPE_METHODS) as sampler, Timed(evals) as evaluator:
        if profile:
            prof = cProfile.Profile()
            prof.runcall(quiet, argv)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
            print(text.getvalue())
        else:
            assert quiet(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    return {"wall": summary["wall_s"], "sampler": sampler.seconds, "eval": evaluator.seconds}


# --- report ---------------------------------------------------------------------------------


def row(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<58} {value:>14}  {note}")


def report_item(title: str, t: dict, s: dict, cmd_s: float | None) -> None:
    print(title)
    row("MASE-style pipeline (deep copy, swap, DataLoader 512)", f"{t['mase']:.1f} ms/cand")
    row("plain full-batch pass (quantize_model + one forward)", f"{t['plain']:.1f} ms/cand")
    row(
        "bitscout, one at a time (TPE's path), random order",
        f"{t['one']:.2f} ms/cand",
        f"{t['mase'] / t['one']:.0f}x MASE-style (target >= 100x)",
    )
    row(
        "bitscout, consecutive chunks (brute force's path)",
        f"{t['many']:.2f} ms/cand",
        f"{t['mase'] / t['many']:.0f}x MASE-style (target >= 250x)",
    )
    row(
        "floor: stacked GEMM + ReLU + metrics, preallocated",
        f"{t['floor']:.2f} ms/cand",
        f"bitscout's chunks at {t['many'] / t['floor']:.1f}x the floor (target <= 2x)",
    )
    if "unshared" in t:
        row(
            "bitscout, consecutive chunks, latency timed per candidate",
            f"{t['unshared']:.2f} ms/cand",
            f"{t['mase'] / t['unshared']:.0f}x MASE-style",
        )
    row("Evaluator set-up (float head, profile)", f"{t['built']:.0f} ms")
    target = "(target <= 0.5 s)" if cmd_s is not None else ""
    row("whole TPE search, 48 trials (search time)", f"{s['wall']:.2f} s", target)
    if cmd_s is not None:
        row(
            "`bitscout search` command (start-up, search, report)",
            f"{cmd_s:.2f} s",
            "(target < 5 s; MASE 14-23 s)",
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, for a smoke run")
    parser.add_argument("--profile", action="store_true", help="cProfile the TPE search")
    parser.add_argument("--jsc-s-samples", type=int, default=16_600, help="item 3's val rows")
    args = parser.parse_args(argv)
    n_val = 16_600 if args.quick else 166_000
    n3 = 1_660 if args.quick else args.jsc_s_samples
    print(
        f"bitscout search benchmark: torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_all(Path(tmp), n_val, n3, args)


def run_all(tmp: Path, n_val: int, n3: int, args: argparse.Namespace) -> None:
    seed = write(tmp / "seed.toml", seed_doc(n_val))
    setup = prepared(seed, tmp / "seed")
    ckpt = tmp / "seed" / "model.pt"
    baseline_n = 1 if args.quick else 3
    tpe = search(seed, tmp / "tpe", ckpt, profile=args.profile)
    brute = search(seed, tmp / "brute", ckpt, "--strategy", "bruteforce")
    timings = per_candidate(setup, baseline_n, latency=False)
    title = f"1. seed space, jsc-tiny, 48 candidates, {n_val:,} validation samples"
    report_item(title, timings, tpe, command_s(seed, tmp / "cmd", ckpt))
    row("  of which Python start-up and imports", f"{import_s():.2f} s")
    row("whole brute-force search, 48 candidates (search time)", f"{brute['wall']:.2f} s")
    latency = write(tmp / "latency.toml", seed_doc(n_val, latency=True))
    timings = per_candidate(setup, baseline_n, latency=True)
    lat_search = search(latency, tmp / "latency", ckpt)
    report_item(f"2. the same with latency {LATENCY}", timings, lat_search, None)
    item3(tmp, n3, args.quick)
    item4(tpe)


def item3(tmp: Path, n_val: int, quick: bool) -> None:
    config = write(tmp / "jsc_s.toml", jsc_s_doc(n_val, quick))
    size = prepared(config, tmp / "jsc_s")[1].size
    r = bruteforce_rss(config, tmp / "jsc_s_run", tmp / "jsc_s" / "model.pt", size)
    print(
        f"3. jsc-s by name, 4 Linear layers, brute force over {size:,} candidates, "
        f"{n_val:,} validation samples"
    )
    row("search (store included)", f"{r['n'] / r['wall']:.0f} cand/s", f"{r['wall']:.1f} s")
    row("evaluation alone", f"{r['n'] / r['eval']:.0f} cand/s", f"{r['eval']:.1f} s")
    (p0, c0, cache0, n0), (p1, c1, cache1, n1) = (r["rss"][m] for m in r["marks"])
    marks = f"{r['marks'][0]:,} / {r['marks'][1]:,} candidates"
    row(f"peak RSS after {marks}", f"{p0:.0f} / {p1:.0f} MB", f"growth {p1 - p0:.1f} MB")
    row(
        f"current RSS after {marks}",
        f"{c0:.0f} / {c1:.0f} MB",
        f"growth {c1 - c0:.1f} MB (target < 50 MB)",
    )
    a0, a1 = (r["alone"][m] for m in r["marks"])
    row(
        "  the same, evaluator alone (no store, no strategy)",
        f"{a0:.0f} / {a1:.0f} MB",
        f"growth {a1 - a0:.1f} MB",
    )
    row(
        "evaluator caches: activations; metrics entries",
        f"{cache0:.0f} / {cache1:.0f} MB",
        f"{n0:,} / {n1:,} entries",
    )
    row(
        "peak / current RSS when the command ends (report included)",
        f"{r['end'][0]:.0f} / {r['end'][1]:.0f} MB",
    )


def item4(tpe: dict) -> None:
    rest = tpe["wall"] - tpe["sampler"] - tpe["eval"]
    print("4. TPE on the seed space, 48 trials")
    row(
        "sampler / evaluator / rest (store, progress)",
        f"{tpe['sampler']:.2f} / {tpe['eval']:.2f} / {rest:.2f} s",
        f"sampler {100 * tpe['sampler'] / tpe['wall']:.0f}% of the search (target < 10%)",
    )


if __name__ == "__main__":
    main()
