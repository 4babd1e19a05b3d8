"""How fast bitscout searches, against a MASE-style evaluation measured in the same run.

    python benchmarks/bench_search.py            # the full benchmark (a few minutes)
    python benchmarks/bench_search.py --quick    # a smoke run on small data (a minute)
    python benchmarks/bench_search.py --profile  # also cProfile the TPE search

0. This machine's roofline, measured first: one core's GEMM rate (a 1024^3 torch.mm on one
   thread) and copy bandwidth (a 256 MB tensor copy), and from them the floor of a seed-space
   candidate: the larger of its multiply-adds at that rate and its unavoidable bytes (the
   layer's input read once, its logits written once) at that bandwidth.
1. The seed space (jsc-tiny, 48 candidates) on `fake` data with 166,000 validation samples:
   per-candidate ms of a MASE-style pipeline (deep copy, layer swap, DataLoader with batches
   of 512, per-batch metric accumulation), of the plain full-batch pass, and of bitscout's
   Evaluator (one candidate at a time as TPE asks, and consecutive candidates as brute force
   asks), each also as a multiple of the floor; the whole searches' seconds, and their wall
   time per candidate against the MASE-style pipeline; the `bitscout search` command.
2. The same with `latency` added.
3. jsc-s by name over four Linear layers with 12 choices each (20,736 candidates), brute
   force, one trial per candidate and chunked: candidates per second against the evaluation
   alone, RSS after 1,000 and after all candidates.
4. TPE on the seed space, journal on the local disk: the sampler's share, and per trial (from
   one trial's end to the next) the store and the rest: the cycle less sampler and evaluator.
5. A user's own model (examples/own_model, 40 TPE trials), 3 times each, interleaved:
   summary.json's wall_s with out=dir against out=None, and the whole call with out=dir less
   its wall_s (the set-up before the search and the outputs after it: trials.csv, best.toml,
   summary.json, plots, report.md); the same after 1,000 random trials.

Timings are wall-clock on this machine; the load average is printed because another busy
process on a 2-core machine slows every number down. Each figure's target is printed beside
it; ratios are against baselines measured in the same run.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
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
    bruteforce_rss,
    command_s,
    import_s,
    jsc_s_doc,
    mase_style,
    plain,
    prepared,
    quiet,
    roofline,
    seed_doc,
    seed_floor,
    write,
)
from bench_trials import Spans, TrialEnds, own_model, own_search

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
    """One in-process `bitscout search`: its summary's wall_s, the seconds in the sampler and
    in the evaluator, and per trial after the first the store and the rest (ms)."""
    argv = ["search", str(config), "--load", str(ckpt), "--out", str(out), *extra]
    evals = [(Evaluator, "evaluate_many")]
    with Spans(TPE_METHODS) as sampler, Spans(evals) as evaluator, TrialEnds() as ends:
        if profile:
            prof = cProfile.Profile()
            prof.runcall(quiet, argv)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
            print(text.getvalue())
        else:
            assert quiet(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    return {"wall": summary["wall_s"], "sampler": sampler.seconds, "eval": evaluator.seconds,
            "rest_ms": ends.rest_ms(sampler, evaluator)}  # fmt: skip


# --- report ---------------------------------------------------------------------------------


def row(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<58} {value:>14}  {note}")


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """The median of `values` and their range, e.g. `1.23 (1.10-1.40)`."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})"


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report_roofline(roof: dict, floor: dict, n_rows: int) -> None:
    print(f"0. this machine's roofline, one core (load average {os.getloadavg()[0]:.2f})")
    row(
        "GEMM rate: 1024^3 torch.mm, float32, one thread",
        f"{2 * roof['macs'] / 1e9:.1f} GFLOP/s",
        f"{roof['macs'] / 1e9:.1f} G multiply-adds/s",
    )
    row(
        "copy bandwidth: 256 MB float32 copy (read + written)",
        f"{roof['bandwidth'] / 1e9:.1f} GB/s",
    )
    row(
        f"seed candidate, {n_rows:,} rows: {floor['macs'] / 1e6:.1f} M multiply-adds",
        f"{floor['compute_ms']:.2f} ms",
        "at the GEMM rate",
    )
    row(
        f"  {floor['bytes'] / 1e6:.1f} MB: the input read once, the logits written once",
        f"{floor['memory_ms']:.2f} ms",
        "at the copy bandwidth",
    )
    row("  floor: the larger of the two", f"{floor['ms']:.2f} ms")  # fmt: skip


def report_item(title: str, t: dict, floor: float) -> None:
    print(f"{title} (load average {os.getloadavg()[0]:.2f})")
    row("MASE-style pipeline (deep copy, swap, DataLoader 512)", f"{t['mase']:.1f} ms/cand")
    row("plain full-batch pass (quantize_model + one forward)", f"{t['plain']:.1f} ms/cand",
        f"{t['plain'] / floor:.1f}x the floor")  # fmt: skip
    row(
        "bitscout, one at a time (TPE's path), random order",
        f"{t['one']:.2f} ms/cand",
        f"{t['mase'] / t['one']:.0f}x MASE-style (target >= 100x); {t['one'] / floor:.1f}x "
        "the floor",
    )
    row(
        "bitscout, consecutive chunks (brute force's path)",
        f"{t['many']:.2f} ms/cand",
        f"{t['mase'] / t['many']:.0f}x MASE-style; {t['many'] / floor:.1f}x the floor "
        f"(target <= 3x: {mark(t['many'] <= 3 * floor)})",
    )
    if "unshared" in t:
        row(
            "bitscout, consecutive chunks, latency timed per candidate",
            f"{t['unshared']:.2f} ms/cand",
            f"{t['mase'] / t['unshared']:.0f}x MASE-style",
        )
    row("Evaluator set-up (float head, profile)", f"{t['built']:.0f} ms")


def report_searches(t: dict, tpe: dict, brute: dict, cmd_s: float) -> None:
    """Whole searches, and their wall time per candidate against the MASE-style pipeline."""
    row("whole TPE search, 48 trials (search time)", f"{tpe['wall']:.2f} s", "(target <= 0.5 s)")
    row("whole brute-force search, 48 candidates (search time)", f"{brute['wall']:.2f} s")
    for name, s, target in (("TPE", tpe, 150), ("brute force", brute, 250)):
        per = 1000 * s["wall"] / 48
        row(f"end to end, {name}: search wall time / 48 candidates", f"{per:.2f} ms/cand",
            f"{t['mase'] / per:.0f}x MASE-style (target >= {target}x: "
            f"{mark(t['mase'] / per >= target)})")  # fmt: skip
    row("`bitscout search` command (start-up, search, report)", f"{cmd_s:.2f} s",
        "(target < 5 s; MASE 14-23 s)")  # fmt: skip
    row("  of which Python start-up and imports", f"{import_s():.2f} s")


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
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def run_all(tmp: Path, n_val: int, n3: int, args: argparse.Namespace) -> None:
    roof = roofline()
    floor = seed_floor(n_val, roof)
    report_roofline(roof, floor, n_val)
    seed = write(tmp / "seed.toml", seed_doc(n_val))
    setup = prepared(seed, tmp / "seed")
    ckpt = tmp / "seed" / "model.pt"
    baseline_n = 1 if args.quick else 3
    tpe = search(seed, tmp / "tpe", ckpt, profile=args.profile)
    brute = search(seed, tmp / "brute", ckpt, "--strategy", "bruteforce")
    timings = per_candidate(setup, baseline_n, latency=False)
    title = f"1. seed space, jsc-tiny, 48 candidates, {n_val:,} validation samples"
    report_item(title, timings, floor["ms"])
    report_searches(timings, tpe, brute, command_s(seed, tmp / "cmd", ckpt))
    latency = write(tmp / "latency.toml", seed_doc(n_val, latency=True))
    timings = per_candidate(setup, baseline_n, latency=True)
    lat_search = search(latency, tmp / "latency", ckpt)
    report_item(f"2. the same with latency {LATENCY}", timings, floor["ms"])
    row("whole TPE search, 48 trials (search time)", f"{lat_search['wall']:.2f} s")
    for chunked in (False, True):
        item3(tmp, n3, args.quick, chunked)
    item4(tpe)
    item5(tmp, args.quick)


def item3(tmp: Path, n_val: int, quick: bool, chunked: bool) -> None:
    doc = jsc_s_doc(n_val, quick)
    doc["search"]["strategy"]["setup"] = {"chunked": chunked}
    name = f"jsc_s_{'chunked' if chunked else 'trials'}"
    config = write(tmp / f"{name}.toml", doc)
    size = prepared(config, tmp / name)[1].size
    r = bruteforce_rss(config, tmp / f"{name}_run", tmp / name / "model.pt", size)
    kind = "chunked (one trial per chunk)" if chunked else "one trial per candidate"
    print(f"3. jsc-s by name, 4 Linear layers, brute force over {size:,} candidates, {kind}, "
          f"{n_val:,} validation samples (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
    share, alone = r["eval"] / r["wall"], r["alone"]["s"]
    row("search (store included)", f"{r['n'] / r['wall']:.0f} cand/s",
        f"{r['wall']:.1f} s; {100 * share:.1f}% of the evaluation-alone rate (target >= 90%: "
        f"{mark(share >= 0.9)})")  # fmt: skip
    row("evaluation alone (the same search's evaluator calls)", f"{r['n'] / r['eval']:.0f} cand/s",
        f"{r['eval']:.1f} s")  # fmt: skip
    row("  the evaluator alone in a process of its own (no store)", f"{r['n'] / alone:.0f} cand/s",
        f"{alone:.1f} s; the search at {100 * alone / r['wall']:.1f}% of its rate")  # fmt: skip
    rss_rows(r)


def rss_rows(r: dict) -> None:
    (p0, c0, cache0, n0), (p1, c1, cache1, n1) = (r["rss"][m] for m in r["marks"])
    marks = f"{r['marks'][0]:,} / {r['marks'][1]:,} candidates"
    row(f"peak RSS after {marks}", f"{p0:.0f} / {p1:.0f} MB", f"growth {p1 - p0:.1f} MB")
    row(f"current RSS after {marks}", f"{c0:.0f} / {c1:.0f} MB",
        f"growth {c1 - c0:.1f} MB (target < 50 MB: {mark(c1 - c0 < 50)})")  # fmt: skip
    a0, a1 = (r["alone"]["rss"][m] for m in r["marks"])
    row("  the same, evaluator alone (no store, no strategy)", f"{a0:.0f} / {a1:.0f} MB",
        f"growth {a1 - a0:.1f} MB")  # fmt: skip
    row("evaluator caches: activations; metrics entries", f"{cache0:.0f} / {cache1:.0f} MB",
        f"{n0:,} / {n1:,} entries")  # fmt: skip
    row("peak / current RSS when the command ends (report included)",
        f"{r['end'][0]:.0f} / {r['end'][1]:.0f} MB")  # fmt: skip


def item4(tpe: dict) -> None:
    rest = tpe["wall"] - tpe["sampler"] - tpe["eval"]
    per = tpe["rest_ms"]
    print("4. TPE on the seed space, 48 trials, journal on the local disk")
    row(
        "sampler / evaluator / rest (store, progress)",
        f"{tpe['sampler']:.2f} / {tpe['eval']:.2f} / {rest:.2f} s",
        f"sampler {100 * tpe['sampler'] / tpe['wall']:.0f}% of the search (target < 10%)",
    )
    row(
        "store and the rest per trial, median (min-max)",
        spread(per) + " ms",
        f"target <= 1 ms: {mark(statistics.median(per) <= 1)}",
    )
    row("  the same, mean: the rest of wall_s / 48", f"{1000 * rest / 48:.2f} ms")
    row(
        "  of the rest, outside trials 2-48's cycles (the first trial; the",
        f"{rest - sum(per) / 1000:.2f} s",
    )
    row("    search's end: the float model's metrics, the ranking)", "")  # fmt: skip


def item5(tmp: Path, quick: bool) -> None:
    """A user's own model: the journal's cost to the search, and the output phase."""
    model, data = own_model(epochs=1 if quick else 5)
    trials, many, repeats = 40, 100 if quick else 1000, 1 if quick else 3
    own_search(model, data, 4, 99, tmp / "own_warm", "tpe")  # imports, first-call costs
    runs: dict[str, list[dict]] = {"none": [], "dir": []}
    for i in range(repeats):
        runs["none"].append(own_search(model, data, trials, i, None, "tpe"))
        runs["dir"].append(own_search(model, data, trials, i, tmp / f"own_{i}", "tpe"))
    print(f"5. a user's own model (examples/own_model), {trials} TPE trials, {repeats} runs each, "
          f"median (min-max) (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
    walls = {k: [r["wall"] for r in v] for k, v in runs.items()}
    row("search time (wall_s), out=None", spread(walls["none"]) + " s")
    row("search time (wall_s), out=dir", spread(walls["dir"]) + " s")
    ratio = [d / n for d, n in zip(walls["dir"], walls["none"], strict=True)]
    row("  out=dir / out=None", spread(ratio) + "x",
        f"target <= 1.3x: {mark(statistics.median(ratio) <= 1.3)}")  # fmt: skip
    over = [r["call"] - r["wall"] for r in runs["dir"]]
    row("whole call with out=dir less its wall_s (set-up, outputs)", spread(over) + " s",
        f"target <= 0.5 s: {mark(statistics.median(over) <= 0.5)}")  # fmt: skip
    big = own_search(model, data, many, 0, tmp / "own_many", "random")
    row(
        f"  the same after {many:,} random trials (one run)",
        f"{big['call'] - big['wall']:.2f} s",
        f"target <= 0.5 s: {mark(big['call'] - big['wall'] <= 0.5)}; search {big['wall']:.1f} s",
    )


if __name__ == "__main__":
    main()
