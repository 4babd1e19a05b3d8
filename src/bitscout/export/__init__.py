"""What leaves bitscout for a hardware flow: hls4ml's configuration (`to_hls4ml`), the
quantized weights on their grid (`grid_state_dict`, `write_checkpoint`), their integer codes
(`codes`, `write_npz`), every precision of the datapath (`precision`), and a check against
hls4ml's C++ emulation (`verify`); `HlsOptions` holds the FPGA part, clock, IO type,
strategy and reuse factor the project is written for.

`bitscout.export` is this package and also a function: `bitscout.export(result_or_run_dir,
to=[...])` writes a search's best config (or a trial's) as those artifacts. A package attribute
and a function cannot share one name (importing `bitscout.export.hls4ml` rebinds
`bitscout.export` to the package), so the package itself is callable: its class is `Exporter`,
a module whose `__call__` is `export.run.export`.
"""

import sys
import types

from bitscout.export.artifacts import (
    codes,
    grid_state_dict,
    precision,
    write_checkpoint,
    write_npz,
    write_precision,
)
from bitscout.export.hardware import WIDE, HwType, hardware
from bitscout.export.hls4ml import to_hls4ml, verify
from bitscout.export.project import HlsOptions
from bitscout.export.run import ExportResult
from bitscout.export.run import export as _export

__all__ = [
    "WIDE",
    "ExportResult",
    "Exporter",
    "HlsOptions",
    "HwType",
    "codes",
    "export",
    "grid_state_dict",
    "hardware",
    "precision",
    "to_hls4ml",
    "verify",
    "write_checkpoint",
    "write_npz",
    "write_precision",
]


class Exporter(types.ModuleType):
    """The `bitscout.export` package, callable. Its functions are class attributes as well,
    so type checkers see `bitscout.export.to_hls4ml` on the callable too."""

    HlsOptions = HlsOptions
    codes = staticmethod(codes)
    grid_state_dict = staticmethod(grid_state_dict)
    hardware = staticmethod(hardware)
    precision = staticmethod(precision)
    to_hls4ml = staticmethod(to_hls4ml)
    verify = staticmethod(verify)
    write_checkpoint = staticmethod(write_checkpoint)
    write_npz = staticmethod(write_npz)
    write_precision = staticmethod(write_precision)

    # the export itself: `bitscout.export(result_or_run_dir, to=..., out=..., ...)`, with
    # export.run.export's signature and docstring (one declaration of its arguments)
    __call__ = staticmethod(_export)


sys.modules[__name__].__class__ = Exporter
# `from bitscout import export` and bitscout's lazy attribute table find the callable here;
# typed as Exporter so `bitscout.export(...)` is checked against `__call__`.
export: Exporter = sys.modules[__name__]  # type: ignore[assignment]
