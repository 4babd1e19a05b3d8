"""A standalone hls4ml project: what `bitscout export --to hls4ml` writes for a colleague with
hls4ml and no bitscout. `hls4ml_config.yml` is the whole configuration
`hls4ml.converters.convert_from_config` takes (part, clock, IO type, strategy, the layers'
precisions, the test-bench files); `hls4ml_model.pt` is the float model with its weights on
the grid, saved as a torch.fx GraphModule (torch's own layers only, no bitscout class);
`tb_data/` holds validation rows and bitscout's predictions for them, in the test-bench
format hls4ml's `myproject_test.cpp` reads (one row per line, values separated by spaces);
`convert_hls4ml.py` ties them together with paths relative to itself."""

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from bitscout._core.files import atomic, write_text
from bitscout.errors import ConfigError

IO_TYPES = ("io_parallel", "io_stream")
STRATEGIES = ("latency", "resource")
MODEL_FILE = "hls4ml_model.pt"
TB_INPUT = "tb_data/tb_input_features.dat"
TB_OUTPUT = "tb_data/tb_output_predictions.dat"
PROJECT_DIR = "hls4ml_prj"
PROJECT_NAME = "myproject"


@dataclass(frozen=True)
class HlsOptions:
    """hls4ml's project settings: the FPGA part, the clock period in ns, the IO type, the
    strategy (latency or resource) and every quantized layer's reuse factor."""

    part: str = "xcvu13p-flga2577-2-e"  # hls4ml 1.3.0's default part
    clock_period: float = 5.0
    io_type: str = "io_parallel"
    strategy: str = "latency"
    reuse_factor: int = 1
    flags: bool = field(default=False, compare=False)  # given as command-line flags

    def key(self, name: str) -> str:
        """How a refusal names setting `name`: `--io-type` from the command line, `io_type`
        from Python."""
        return f"--{name.replace('_', '-')}" if self.flags else name

    @property
    def hls_strategy(self) -> str:
        return self.strategy.capitalize()  # hls4ml spells them Latency, Resource


DEFAULTS = HlsOptions()


def hls_options(
    part: str = HlsOptions.part, clock_period: float = HlsOptions.clock_period,
    io_type: str = HlsOptions.io_type, strategy: str = HlsOptions.strategy,
    reuse_factor: int = HlsOptions.reuse_factor, *, flags: bool = False,
) -> HlsOptions:  # fmt: skip
    """The settings checked, each refused under its Python name (`--flag` with `flags`)."""

    key = HlsOptions(flags=flags).key
    if not isinstance(part, str) or not part.strip() or any(c.isspace() for c in part):
        raise ConfigError(key("part"), "must be an FPGA part name without spaces", part)
    number = isinstance(clock_period, int | float) and not isinstance(clock_period, bool)
    if not number or not math.isfinite(clock_period) or clock_period <= 0:
        raise ConfigError(key("clock_period"), "must be a number of ns > 0", clock_period)
    if io_type not in IO_TYPES:
        raise ConfigError(key("io_type"), f"must be one of {', '.join(IO_TYPES)}", io_type)
    if strategy not in STRATEGIES:
        raise ConfigError(key("strategy"), f"must be one of {', '.join(STRATEGIES)}", strategy)
    if isinstance(reuse_factor, bool) or not isinstance(reuse_factor, int) or reuse_factor < 1:
        raise ConfigError(key("reuse_factor"), "must be an integer >= 1", reuse_factor)
    return HlsOptions(part, float(clock_period), io_type, strategy, reuse_factor, flags)


def project_config(
    hls_config: Mapping[str, Any], options: HlsOptions, model: Any = MODEL_FILE,
    output_dir: str = PROJECT_DIR, test_bench: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """What `convert_from_config` reads: `hls_config` (`to_hls4ml`'s) with the project around
    it. `model` is the file written (`convert_hls4ml.py` loads it) or the module itself."""
    config = {
        "PytorchModel": model, "InputShape": hls_config["InputShape"],
        "OutputDir": output_dir, "ProjectName": PROJECT_NAME, "Backend": "Vivado",
        "Part": options.part, "ClockPeriod": options.clock_period, "IOType": options.io_type,
        "HLSConfig": {k: v for k, v in hls_config.items() if k != "InputShape"},
    }  # fmt: skip
    if test_bench:
        config.update({"InputData": TB_INPUT, "OutputPredictions": TB_OUTPUT})
    return config


def graph_module(model: nn.Module) -> fx.GraphModule:
    """`model` traced by torch.fx: it pickles as its generated code and torch's own layers, so
    loading it needs torch and not the classes that built it. hls4ml names its layers after
    the same call targets (`seq_blocks.2` -> `seq_blocks_2`)."""
    return fx.symbolic_trace(model.eval())


def foreign_modules(module: nn.Module) -> list[str]:
    """The classes a pickled `module` needs from outside torch."""
    found = {type(m) for m in module.modules()}
    return sorted(f"{t.__module__}.{t.__qualname__}" for t in found
                  if not t.__module__.startswith("torch"))  # fmt: skip


def dat(rows: np.ndarray) -> str:
    """Rows in hls4ml's test-bench format. `repr` of a float64 reads back exactly (atof), so
    bitscout's values, all on binary grids, reach the C++ test bench unchanged."""
    flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in flat)


SCRIPT = '''"""Convert bitscout's quantized model ({label}{source}) with hls4ml {version}.

Needs hls4ml, torch and numpy (not bitscout); runs from any directory:

    python <this folder>/convert_hls4ml.py          # {project}/, C simulation of tb_data
    python <this folder>/convert_hls4ml.py --build  # and synthesis (Vivado/Vitis HLS)

Computed in float by bitscout, approximated here in {wide}: {floats}.{extra}
"""
import sys
from pathlib import Path

import hls4ml
import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent


def load_config() -> dict:
    """hls4ml_config.yml with its paths made absolute. hls4ml {version} cannot load a PyTorch
    model from the path itself (torch.load's weights-only default refuses a whole module,
    and a string InputShape is misparsed), so the model is loaded here."""
    config = yaml.safe_load((HERE / "hls4ml_config.yml").read_text())
    config["PytorchModel"] = torch.load(HERE / config["PytorchModel"], weights_only=False)
    for key in ("OutputDir", "InputData", "OutputPredictions"):
        config[key] = str(HERE / config[key])
    return config


def main() -> None:
    config = load_config()
    hls_model = hls4ml.converters.convert_from_config(config)
    hls_model.compile()  # the C simulation, as a Python library
    x = np.loadtxt(config["InputData"], ndmin=2)
    want = np.loadtxt(config["OutputPredictions"], ndmin=2)
    got = np.asarray(hls_model.predict(np.ascontiguousarray(x))).reshape(want.shape)
    print(f"C simulation of {{len(x)}} test-bench rows: largest difference from bitscout's "
          f"predictions {{np.max(np.abs(got - want)):.3g}}, top class agrees on "
          f"{{np.mean(got.argmax(1) == want.argmax(1)):.2%}}")
    if "--build" in sys.argv[1:]:
        hls_model.build(csim=True, synth=True)


if __name__ == "__main__":
    main()
'''


def script(
    version: str, label: str, source: str | None, wide: str, floats: Sequence[str],
    foreign: Sequence[str],
) -> str:  # fmt: skip
    """convert_hls4ml.py, its docstring naming what it converts and what it approximates."""
    extra = ""
    if foreign:  # pickled by reference: these must be importable where the script runs
        extra = f"\nThe model file also needs these classes importable: {', '.join(foreign)}."
    return SCRIPT.format(
        label=label,
        source=f", {source}" if source else "",
        version=version,
        project=PROJECT_DIR,
        wide=wide,
        floats=", ".join(floats) or "none",
        extra=extra,
    )


def write_model(module: fx.GraphModule, path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    with atomic(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def write_test_bench(out: Path, x: np.ndarray, predictions: np.ndarray) -> list[Path]:
    (out / "tb_data").mkdir(exist_ok=True)
    write_text(out / TB_INPUT, dat(x))
    write_text(out / TB_OUTPUT, dat(predictions))
    return [out / TB_INPUT, out / TB_OUTPUT]
