"""What leaves bitscout for a hardware flow: hls4ml's configuration (`to_hls4ml`), the
quantized weights on their grid (`grid_state_dict`, `write_checkpoint`), their integer codes
(`codes`, `write_npz`), every precision of the datapath (`precision`), and a check against
hls4ml's C++ emulation (`verify`)."""

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

__all__ = [
    "WIDE",
    "HwType",
    "codes",
    "grid_state_dict",
    "hardware",
    "precision",
    "to_hls4ml",
    "verify",
    "write_checkpoint",
    "write_npz",
    "write_precision",
]
