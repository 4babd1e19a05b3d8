"""An independent NumPy reference of signed fixed-point quantization, shared by the tests."""

import numpy as np
import torch

from bitscout.quant import Integer


def ref_quantize(x, width: int, frac, rounding: str = "half_even", overflow: str = "saturate"):
    """Independent fixed-point reference (float64 scaling is exact for float32 inputs)."""
    f = width // 2 if frac in (None, "NA") else frac
    s = np.asarray(x, dtype=np.float32).astype(np.float64) * 2.0**f
    lo = np.floor(s)
    rem = s - lo
    if rounding == "floor":
        k = lo
    elif rounding == "half_up":
        k = np.where(rem >= 0.5, lo + 1, lo)
    else:
        k = np.where((rem > 0.5) | ((rem == 0.5) & (np.fmod(lo, 2) != 0)), lo + 1, lo)
    k_min, span = -(1 << (width - 1)), 1 << width
    if overflow == "saturate":
        ks = [min(max(int(v), k_min), span + k_min - 1) for v in k.ravel()]
    else:
        ks = [(int(v) - k_min) % span + k_min for v in k.ravel()]
    return (np.array(ks, dtype=np.float64) * 2.0**-f).reshape(s.shape)


def ref_tensor(t: torch.Tensor, fmt: Integer | None) -> torch.Tensor:
    """`t` quantized by the reference (float32), or `t` itself for fmt=None."""
    if fmt is None:
        return t.detach().clone()
    values = ref_quantize(t.detach().numpy(), fmt.width, fmt.frac_width, fmt.rounding, fmt.overflow)
    return torch.from_numpy(values).to(torch.float32)
