"""Start-up of the commands, as ratios to `python -c "import torch"` timed in the same run.

    python benchmarks/bench_startup.py [--repeats 7]

Targets (issue 12): `bitscout --help` at most 0.2 of it, `bitscout space` at most 1.3 of it,
the whole seed search command at most 2.5 of it. The seed search is examples/jsc_tiny_lab3.toml
(jsc-tiny, TPE, 48 trials) on `fake` data shaped like JSC (16,600 validation rows), with a
checkpoint trained beforehand, writing every output and the report. Each command runs
`--repeats` times, interleaved with the baseline; the table shows medians and the spread.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_support import quiet, seed_doc, write

ROOT = Path(__file__).resolve().parents[1]


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def commands(work: Path) -> dict[str, list[str]]:
    config = write(work / "seed.toml", seed_doc(16_600))
    assert quiet(["train", str(config), "--out", str(work / "train")]) == 0
    ckpt = str(work / "train" / "model.pt")
    bitscout = [sys.executable, "-m", "bitscout"]
    return {
        "python -c 'import torch' (baseline)": [sys.executable, "-c", "import torch"],
        "bitscout --help": [*bitscout, "--help"],
        "bitscout space examples/digits_mlp.toml": [*bitscout, "space",
                                                    str(ROOT / "examples" / "digits_mlp.toml")],
        "bitscout search (seed: jsc-tiny, 48 TPE trials, report)": [
            *bitscout, "search", str(config), "--load", ckpt, "--out", str(work / "run"),
            "--quiet",
        ],
    }  # fmt: skip


TARGETS = {"bitscout --help": 0.2, "bitscout space": 1.3, "bitscout search": 2.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = commands(Path(tmp))
        times: dict[str, list[float]] = {name: [] for name in runs}
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            for name, argv in runs.items():
                if "search" in name:
                    subprocess.run(["rm", "-rf", str(Path(tmp) / "run")], check=True)
                times[name].append(seconds(argv))
    base = statistics.median(next(iter(times.values())))
    print(f"load average {load:.2f} (1 min, at the start), {args.repeats} runs each, interleaved")
    print(
        "| command | median s | min-max s | ratio to import torch | target |\n|---|---|---|---|---|"
    )
    for name, ts in times.items():
        target = next((f"<= {v}" for k, v in TARGETS.items() if name.startswith(k)), "")
        ratio = statistics.median(ts) / base
        print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f}-{max(ts):.2f} | "
              f"{ratio:.2f} | {target} |")  # fmt: skip


if __name__ == "__main__":
    main()
