"""What a trial's bookkeeping costs: TPE on the seed space with its journal on a local disk,
against the same search with `out=None` (an in-memory study, no files), in one run.

    python benchmarks/bench_store.py [--repeats 3] [--rows 16600] [--trials 48]

Each repeat runs both searches (fresh run directory, same seed) and splits the search's
`wall_s` (summary.json's) into the sampler's time, the evaluator's and the rest: the store,
the progress hook, trials.csv. The rest is split further: the journal's writes (each read
back as Optuna replays it), trials.csv's appends, the report hook, and the ranking of the
trials (`conclude`, which runs before `wall_s` is taken). Printed per trial, median and
spread (min-max) of the repeats; the target is the journal's "store and the rest" <= 1 ms a
trial, less the ranking, which runs once a search (as bench_search.py's per-trial cycles).
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import tomllib
from pathlib import Path

from bench_search import TPE_METHODS
from bench_support import Timed, prepared, seed_doc, write

import bitscout
from bitscout.evaluate.evaluator import Evaluator
from bitscout.results import conclude
from bitscout.results.console import Reporter
from bitscout.results.trials import TrialsCsv
from bitscout.study.store.deferred import DeferredWrites

TARGET_MS = 1.0
# the parts of "the rest" timed on their own
PARTS = {
    "journal writes": [(DeferredWrites, "create_new_trial"), (DeferredWrites, "_send")],
    "trials.csv": [(TrialsCsv, "append")],
    "report hook": [(Reporter, "__call__")],
    "ranking": [(conclude, "conclude")],
}


def one(model, data, doc: dict, trials: int, seed: int, out: Path | None) -> dict:
    """One in-process search: its wall_s, the seconds in the sampler and the evaluator, and
    those in each of `PARTS`."""
    scales = doc["search"]["strategy"]["metrics"]
    parts = {name: Timed(targets) for name, targets in PARTS.items()}
    with contextlib.ExitStack() as timing:
        sampler = timing.enter_context(Timed(TPE_METHODS))
        evaluator = timing.enter_context(Timed([(Evaluator, "evaluate_many")]))
        for part in parts.values():
            timing.enter_context(part)
        result = bitscout.search(
            model,
            data,
            doc["search"]["search_space"],
            objective={name: m["scale"] for name, m in scales.items()},
            strategy="tpe",
            trials=trials,
            seed=seed,
            out=out,
        )
    wall = result.summary["wall_s"]
    rest = wall - sampler.seconds - evaluator.seconds
    times = {"wall": wall, "sampler": sampler.seconds, "eval": evaluator.seconds, "rest": rest}
    return times | {name: part.seconds for name, part in parts.items()}


def ms(values: list[float], trials: int) -> str:
    per = sorted(1000 * v / trials for v in values)
    return f"{statistics.median(per):7.2f} ms  ({per[0]:.2f}-{per[-1]:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=16_600, help="validation rows")
    parser.add_argument("--trials", type=int, default=48)
    args = parser.parse_args()
    print(f"bench_store: load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        config = write(Path(tmp) / "seed.toml", seed_doc(args.rows))
        model, _, x, y = prepared(config, Path(tmp) / "seed")
        doc = tomllib.loads(config.read_text())
        for out in (None, Path(tmp) / "warm"):  # warm-up: imports, first-call costs
            one(model, (x, y), doc, 4, 99, out)
        runs: dict[str, list[dict]] = {"memory": [], "journal": []}
        for i in range(args.repeats):
            start = time.perf_counter()
            runs["memory"].append(one(model, (x, y), doc, args.trials, i, None))
            runs["journal"].append(one(model, (x, y), doc, args.trials, i, Path(tmp) / f"r{i}"))
            print(f"  repeat {i + 1}: {time.perf_counter() - start:.1f} s, "
                  f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    report(runs, args.trials)


def report(runs: dict[str, list[dict]], trials: int) -> None:
    print(f"per trial, median of {len(runs['memory'])} (min-max), {trials} TPE trials:")
    for key, label in (("wall", "search (wall_s)"), ("sampler", "sampler"),
                       ("eval", "evaluator"), ("rest", "store and the rest")):  # fmt: skip
        for where in ("memory", "journal"):
            print(f"  {label:<20} {where:<8} {ms([r[key] for r in runs[where]], trials)}")
    print("  of the rest:")
    for name in PARTS:
        for where in ("memory", "journal"):
            print(f"    {name:<18} {where:<8} {ms([r[name] for r in runs[where]], trials)}")
    extra = [j["wall"] - m["wall"] for j, m in zip(runs["journal"], runs["memory"], strict=True)]
    print(f"  journal - memory, wall_s:     {ms(extra, trials)}")
    rest = statistics.median(1000 * r["rest"] / trials for r in runs["journal"])
    # the ranking runs once a search: bench_search.py's per-trial cycles leave it out too
    own = statistics.median(1000 * (r["rest"] - r["ranking"]) / trials for r in runs["journal"])
    mark = "ok" if own <= TARGET_MS else "MISSED"
    print(f"store and the rest with the journal: {rest:.2f} ms a trial; less the ranking, "
          f"which runs once a search: {own:.2f} ms (target <= {TARGET_MS} ms: {mark})")  # fmt: skip
    ratio = statistics.median(j["wall"] / m["wall"] for j, m in
                              zip(runs["journal"], runs["memory"], strict=True))  # fmt: skip
    print(f"wall_s journal / memory: {ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
