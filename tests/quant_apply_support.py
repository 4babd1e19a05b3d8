"""What the `quantize_model` tests (tests/test_quant_apply*.py) share: a MASE layer entry of a
`[passes.quantize]` plan, written out."""

from __future__ import annotations


def cfg(width: int | None = None, frac="NA", **extra) -> dict:
    """A MASE layer entry; width=None gives `name = "NA"`."""
    if width is None:
        return {"config": {"name": "NA"}}
    config = {"name": "integer"}
    for tensor in ("data_in", "weight", "bias"):
        config[f"{tensor}_width"] = width
        config[f"{tensor}_frac_width"] = frac
    return {"config": config | extra}
