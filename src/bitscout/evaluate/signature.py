"""What the simulated forward of a candidate computes, up to the values (latency's key)."""

from dataclasses import fields

from bitscout.quant.formats import NumberFormat
from bitscout.quant.layers import LayerQuant

Plan = dict[str, LayerQuant | None]


def operations(plan: Plan) -> tuple:
    """What the simulated forward of a candidate computes, up to the values: per layer and
    tensor, whether it is quantized, and its format's signature (for fixed point: the rounding,
    the overflow, float32 or float64; the accumulator and result types are cast alike).
    Fake quantization runs the same operations whatever the width, so candidates that agree
    here take the same time, and timing each again would only add noise."""

    def ops(fmt: NumberFormat | None) -> tuple | None:
        return None if fmt is None else fmt.signature()

    return tuple(
        (path, None if q is None else tuple(ops(getattr(q, f.name)) for f in fields(q)))
        for path, q in plan.items()
    )
