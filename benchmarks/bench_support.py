"""Set-up and measuring tools of `bench_search.py`: configs, baseline pipelines, timers."""

import contextlib
import copy
import io
import json
import math
import multiprocessing
import resource
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import tomli_w
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from bitscout.cli import main as cli
from bitscout.cli.build import load_data, make_model
from bitscout.cli.config import load_config
from bitscout.evaluate import evaluator as evaluate
from bitscout.evaluate.evaluator import predict
from bitscout.evaluate.forward import one_thread
from bitscout.evaluate.metrics import MetricContext, compute_metrics
from bitscout.quant.apply import quantize_model
from bitscout.quant.layers import to_quant
from bitscout.quant.space import parse_space
from bitscout.study.run import REPORTED
from bitscout.study.settings import StrategySettings
from bitscout.zoo.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SEED_METRICS = ["accuracy", "loss", "average_bitwidth", "model_size", "flops"]
STATIC = ["average_bitwidth", "model_size", "flops"]
LATENCY_KEYS = ("latency_repeats", "latency_warmup", "latency_budget_s")
LATENCY = {k: getattr(StrategySettings, k) for k in LATENCY_KEYS}  # the search's defaults
VAL_FRACTION, TEST_FRACTION = 0.8, 0.1
CHUNK = 64  # candidates per evaluate_many call, as the brute-force strategy batches them


def fake_options(n_val: int) -> dict:
    """`fake` dataset options whose validation split has exactly `n_val` rows."""
    return {
        "num_samples": math.ceil(n_val / VAL_FRACTION),
        "val_fraction": VAL_FRACTION,
        "test_fraction": TEST_FRACTION,
    }


def seed_doc(n_val: int, latency: bool = False) -> dict:
    """examples/jsc_tiny_lab3.toml (TPE, 48 trials) on `fake` data."""
    doc = tomllib.loads((ROOT / "examples" / "jsc_tiny_lab3.toml").read_text())
    doc.update(dataset="fake", dataset_options=fake_options(n_val), max_epochs=1)
    if latency:
        doc["search"]["strategy"]["metrics"]["latency"] = {"scale": -0.001, "direction": "minimize"}
    return doc


def jsc_s_doc(n_val: int, quick: bool) -> dict:
    """jsc-s by name: four Linear layers, 3 input x 4 weight widths each (2 x 2 when quick)."""
    layer = {
        "name": ["integer"],
        "data_in_width": [4, 8] if quick else [4, 8, 16],
        "weight_width": [2, 8] if quick else [2, 4, 8, 16],
        "bias_width": [8],
    }
    seed = {"default": {"config": {"name": ["NA"]}}}
    seed |= {f"seq_blocks_{i}": {"config": layer} for i in (2, 5, 7, 9)}
    doc = seed_doc(n_val)
    doc.update(model="jsc-s")
    doc["search"]["search_space"]["seed"] = seed
    doc["search"]["strategy"] = {
        "name": "bruteforce",
        "metrics": doc["search"]["strategy"]["metrics"],
    }
    return doc


def write(path: Path, doc: dict) -> Path:
    path.write_bytes(tomli_w.dumps(doc).encode())
    return path


def quiet(argv: Sequence[str]) -> int:
    """`bitscout ARGV` in this process, its console output swallowed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli(list(argv))


def prepared(config: Path, work: Path) -> tuple:
    """Train the float model once; return it with its space and validation tensors."""
    assert quiet(["train", str(config), "--out", str(work)]) == 0
    cfg = load_config(config)
    data = load_data(cfg)
    model = load_checkpoint(make_model(cfg, data), work / "model.pt").eval()
    space = parse_space(cfg.search["search_space"], model)
    return model, space, data.x_val, data.y_val


def mase_style(model, space, config, x, y, profile, latency: bool) -> dict:
    """MASE's way: copy the model, swap the layer, iterate a per-sample DataLoader in batches of
    512, accumulate the metrics batch by batch."""
    candidate = copy.deepcopy(model)
    for path, quant in space.resolved(config).items():
        if quant is not None:
            parent, _, name = path.rpartition(".")
            layer = candidate.get_submodule(path)
            setattr(candidate.get_submodule(parent), name, to_quant(layer, quant))
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=512):
            logits = candidate(xb)
            correct += int((logits.argmax(dim=1) == yb).sum())
            loss_sum += float(F.cross_entropy(logits, yb)) * len(yb)
    ctx = MetricContext(profile, space.resolved(config), model=candidate, inputs=x, **LATENCY)
    static = compute_metrics(STATIC + (["latency"] if latency else []), ctx)
    return {"accuracy": correct / len(y), "loss": loss_sum / len(y), **static}


def plain(model, space, config, x, y, profile, latency: bool) -> dict:
    """The plain full-batch pass: build the candidate, one forward over all rows."""
    candidate = quantize_model(model, space.plan(config))
    ctx = MetricContext(
        profile,
        space.resolved(config),
        logits=predict(candidate, x),
        targets=y,
        model=candidate,
        inputs=x,
        **LATENCY,
    )
    return compute_metrics(SEED_METRICS + (["latency"] if latency else []), ctx)


class Timed:
    """Adds up the wall time spent in some methods while active (to split a search's time)."""

    def __init__(self, targets: Sequence[tuple[type, str]]) -> None:
        self.targets, self.seconds, self._saved = targets, 0.0, []

    def __enter__(self) -> "Timed":
        for owner, name in self.targets:
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._wrap(original))
        return self

    def _wrap(self, original: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)


def command_s(config: Path, out: Path, ckpt: Path) -> float:
    """The whole `bitscout search` command in a fresh interpreter: start-up, search, report."""
    argv = [
        sys.executable,
        "-m",
        "bitscout",
        "search",
        str(config),
        "--load",
        str(ckpt),
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def import_s() -> float:
    """A fresh interpreter that only imports bitscout's CLI: the command's fixed start-up."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import bitscout.cli"], check=True)
    return time.perf_counter() - start


def _rss_child(argv: list[str], marks: list[int], queue: multiprocessing.Queue) -> None:
    """In a fresh process: the search, with memory sampled as evaluations pass `marks`: peak
    and current RSS, and what the evaluator's caches hold."""
    original = evaluate.Evaluator.evaluate_many
    seen: dict = {"n": 0, "rss": {}, "eval": 0.0}

    def counted(self, configs, **kw):
        start = time.perf_counter()
        out = original(self, configs, **kw)
        seen["eval"] += time.perf_counter() - start
        seen["n"] += len(configs)
        cached = self._runner.cache.bytes / 2**20 if self._runner else 0.0
        for mark in [m for m in marks if seen["n"] >= m and m not in seen["rss"]]:
            seen["rss"][mark] = (peak_mb(), current_mb(), cached, len(self.cache))
        return out

    evaluate.Evaluator.evaluate_many = counted
    rc = quiet(argv)
    end = (peak_mb(), current_mb())
    queue.put({"rc": rc, "n": seen["n"], "rss": seen["rss"], "eval": seen["eval"], "end": end})


def peak_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh in a spawned child,
    where ru_maxrss would carry over the parent's peak."""
    return _proc_status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float:
    """This process's resident memory now (Linux), else its peak."""
    return _proc_status_mb("VmRSS") or peak_mb()


def _proc_status_mb(field: str) -> float | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    line = next(x for x in status.read_text().splitlines() if x.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def _evaluator_child(
    config: Path, ckpt: Path, marks: list[int], queue: multiprocessing.Queue
) -> None:
    """In a fresh process: the evaluator alone (no store, no strategy) over the whole space in
    consecutive chunks, with current RSS sampled as evaluations pass `marks`, and its seconds."""
    cfg = load_config(config)
    data = load_data(cfg)
    model = load_checkpoint(make_model(cfg, data), ckpt)
    space = parse_space(cfg.search["search_space"], model)
    evaluator = evaluate.Evaluator(model, space, (data.x_val, data.y_val), list(REPORTED))
    rss: dict[int, float] = {}
    began = time.perf_counter()
    for start in range(0, space.size, CHUNK):
        stop = min(start + CHUNK, space.size)
        evaluator.evaluate_many([space.config(i) for i in range(start, stop)])
        rss |= {m: current_mb() for m in marks if stop >= m and m not in rss}
    queue.put({"rss": rss, "s": time.perf_counter() - began})


def spawned(target: Callable, *args: object) -> object:
    """`target(*args, queue)` in a fresh interpreter; what it puts on the queue."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def bruteforce_rss(config: Path, out: Path, ckpt: Path, size: int) -> dict:
    argv = ["search", str(config), "--load", str(ckpt), "--out", str(out)]
    marks = [min(1000, size // 4), size]
    result = spawned(_rss_child, argv, marks)
    assert result["rc"] == 0, result
    summary = json.loads((out / "summary.json").read_text())
    alone = spawned(_evaluator_child, config, ckpt, marks)
    return {**result, "wall": summary["wall_s"], "marks": marks, "alone": alone}


# --- the machine's roofline -----------------------------------------------------------------


def best_s(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls, after one untimed call (first touch of the pages)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def roofline(n: int = 1024, copy_bytes: int = 2**28, repeats: int = 7) -> dict[str, float]:
    """One core's GEMM rate (multiply-adds/s of an n x n x n float32 torch.mm) and copy
    bandwidth (bytes read + written per second copying a float32 tensor of `copy_bytes`, far
    larger than the caches, into a preallocated one), each the best of `repeats`."""
    g = torch.Generator().manual_seed(0)
    a, b, out = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g), torch.empty(n, n)
    src = torch.ones(copy_bytes // 4)
    dst = torch.empty_like(src)
    with one_thread():  # as bitscout's evaluator runs
        mm = best_s(lambda: torch.mm(a, b, out=out), repeats)
        copy = best_s(lambda: dst.copy_(src), repeats)
    return {"macs": n**3 / mm, "bandwidth": 2 * copy_bytes / copy}


SEED_LAYER = (16, 5)  # the seed space's quantized layer: Linear(16, 5), jsc-tiny's last


def seed_floor(n_rows: int, roof: dict[str, float]) -> dict[str, float]:
    """The least time a seed-space candidate takes on this core: the larger of its
    multiply-adds at the GEMM rate and its unavoidable bytes at the copy bandwidth. The bytes:
    the layer's float32 input read once and its float32 logits written once (the labels, the
    quantization and the metrics' reductions are left out, so this is a lower bound)."""
    fan_in, fan_out = SEED_LAYER
    macs = n_rows * fan_in * fan_out
    moved = n_rows * (fan_in + fan_out) * 4
    compute, memory = macs / roof["macs"], moved / roof["bandwidth"]
    return {"macs": macs, "bytes": moved, "compute_ms": 1000 * compute,
            "memory_ms": 1000 * memory, "ms": 1000 * max(compute, memory)}  # fmt: skip
