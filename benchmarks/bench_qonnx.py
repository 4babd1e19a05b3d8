"""QONNX export: the verify figures and export times of README's QONNX table.

    python benchmarks/bench_qonnx.py            # prints one JSON object, a row per model

Models: jsc-tiny over the seed's 48-candidate grid, jsc-toy with BatchNorm in front of and
after every Linear layer (random weights and statistics), the digits MLP trained 150 Adam
steps, a small CNN on digits. Each row: values that differ between QONNX's executor and
bitscout, the largest logit difference, export and verify seconds (wall clock; the load
average is printed, as other processes slow every number down).
"""

import itertools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from bitscout.export.qonnx import verify_qonnx, write_qonnx
from bitscout.export.run import Subject
from bitscout.quant.apply import quantize_model
from bitscout.zoo.models import build_model


def layer(i: int, w: int, b: int, **extra: Any) -> dict:
    widths = {f"{t}_width": v for t, v in (("data_in", i), ("weight", w), ("bias", b))}
    fracs = {f"{t}_frac_width": "NA" for t in ("data_in", "weight", "bias")}
    return {"name": "integer", **widths, **fracs, **extra}


def randomize(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.6)
                m.bias.normal_(0, 0.6)
    return model.eval()


def run(model: nn.Module, plan: dict, x: torch.Tensor, out: Path) -> dict:
    start = time.perf_counter()
    subject = Subject(model, plan, x, "bench")
    write_qonnx(subject, out)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    found = verify_qonnx(subject, out, len(x))
    return {
        **found,
        "export_s": round(export_s, 3),
        "verify_s": round(time.perf_counter() - start, 3),
    }


def jsc_rows(root: Path, x: torch.Tensor) -> dict:
    tiny = randomize(build_model("jsc-tiny"), 0)
    worst, times = 0, []
    for i, w, b in itertools.product((4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16)):
        plan = {"by": "name", "seq_blocks_2": {"config": layer(i, w, b)}}
        found = run(tiny, plan, x, root / "tiny")
        worst, times = max(worst, found["differing_values"]), [*times, found["export_s"]]
    rows: dict = {
        "jsc-tiny, 48 seed candidates": {
            "worst differing_values": worst,
            "export_s median": float(np.median(times)),
        }
    }
    toy = randomize(build_model("jsc-toy"), 1)
    plan = {"by": "type", "default": {"config": layer(8, 6, 8)}}
    rows["jsc-toy (8,6,8), BatchNorm between"] = run(toy, plan, x, root / "toy")
    wide = layer(16, 16, 16, rounding="floor", result_width=12, result_frac_width=6)
    rows["jsc-toy 16-bit floor, result <12,6>"] = run(
        toy, {"by": "type", "default": {"config": wide}}, x, root / "toy16"
    )
    return rows


def digits_rows(root: Path) -> dict:
    d = load_digits()
    x = torch.tensor((d.data - d.data.mean(0)) / (d.data.std(0) + 1e-6), dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    mlp = build_model("mlp")
    opt = torch.optim.Adam(mlp.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(mlp(x[:1200]), y[:1200]).backward()
        opt.step()
    mlp.eval()
    xv = x[1200:]
    plan = {"by": "type", "default": {"config": layer(8, 4, 8)}}
    rows = {"digits MLP (8,4,8)": run(mlp, plan, xv, root / "mlp")}
    with torch.no_grad():
        acc = float((quantize_model(mlp, plan)(xv).argmax(1) == y[1200:]).float().mean())
    rows["digits MLP (8,4,8)"]["quantized accuracy"] = acc
    mf = {
        "name": "minifloat_ieee",
        "data_in_width": 8,
        "data_in_exponent_width": 4,
        "weight_width": 6,
        "weight_exponent_width": 3,
        "bias_width": 8,
        "bias_exponent_width": 4,
    }
    rows["digits MLP minifloat_ieee"] = run(
        mlp, {"by": "type", "default": {"config": mf}}, xv, root / "mlpf"
    )
    torch.manual_seed(3)
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    ).eval()
    plan = {"by": "type", "default": {"config": layer(8, 6, 8)}}
    rows["CNN 2 Conv2d + Linear"] = run(cnn, plan, xv.reshape(-1, 1, 8, 8), root / "cnn")
    return rows


def main() -> None:
    x16 = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0)) * 1.5
    with tempfile.TemporaryDirectory(prefix="bench-qonnx-") as tmp:
        rows = {**jsc_rows(Path(tmp), x16), **digits_rows(Path(tmp))}
    rows["load average"] = os.getloadavg()  # type: ignore[assignment]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
