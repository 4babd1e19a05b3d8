"""Candidates' logits through a Chain, reusing everything that several candidates share.

- The head (float modules in front of the first quantizable layer) runs once.
- A layer's weight and bias are quantized once per format.
- The activation at each layer boundary is cached by the formats of the layers before it,
  and a layer's quantized input by those plus its data_in format, so a candidate resumes
  after the longest prefix it shares with a recent one, and an input that no earlier
  quantized layer touches is quantized once per format.
- Candidates that differ only in one layer's weight and bias share that layer's quantized
  input: their weights are stacked into one matrix product, and the rows of every later
  tensor stand for all of them (row `n * g + i` is sample n of candidate i).
"""

import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bitscout.evaluate.engine.caches import BoundaryCache, BoundaryKey
from bitscout.evaluate.engine.candidates import Key
from bitscout.evaluate.engine.chain import Chain, run
from bitscout.evaluate.overflow import (
    Counts,
    Tally,
    count,
    datapath_tally,
    merged,
    param_tally,
    weight_bias,
)
from bitscout.quant.datapath import computed_in, fan_in
from bitscout.quant.formats import NumberFormat, quantize_values
from bitscout.quant.layers import LayerQuant, sum_dtype

_FLOAT = LayerQuant()
MIN_ROWS = 256
# Modules that compute each value on its own (in eval mode), whatever the tensor's layout.
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU,
                nn.Identity, nn.Dropout)  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """Format ids (for cache keys) and formats, both in the chain's stage order."""

    key: Key
    formats: tuple[LayerQuant, ...]


class Runner:
    """Logits of a search's candidates on fixed inputs `x`, reusing what they share."""

    def __init__(
        self, chain: Chain, x: torch.Tensor, *, fixed: Collection[str], block_bytes: int,
        count: bool = False, y: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        """`fixed`: the paths of the layers whose formats are the same in every candidate;
        `count`: tally each candidate's overflow (`evaluate.overflow`) for `logits`; `y`: the
        rows' targets; class indexes sort the rows (`self.y`, the targets in the order of
        `logits`' rows): the batched metrics read a run of one target as a slice (`batched`).
        """
        self.y = y
        if y is not None and y.shape == (len(x),) and not y.is_floating_point():
            # numpy's stable sort: torch's takes 0.2 s on 166,000 rows outside one_thread.
            order = torch.from_numpy(np.argsort(y.cpu().numpy(), kind="stable")).to(y.device)
            x, self.y = x[order], y[order]
        self.count = count
        self.tallies: list[Tally] = []  # of the members of the latest `logits` run to its end
        self._param_tallies: dict[tuple, Tally] = {}
        self.stages = chain.stages
        with torch.inference_mode():
            self.head = run(chain.head, x)
            self._widths = self._widths_from(self.head[:1])
        self._max_row_bytes = max(self.head[0].numel(), *self._widths) * self.head.element_size()
        self.n = len(x)
        self.block_bytes = block_bytes
        pinned = next(
            (k for k, s in enumerate(self.stages) if s.path not in fixed), len(self.stages)
        )
        self.cache = BoundaryCache(pinned)
        self._params: dict[tuple[int, str, NumberFormat | None], torch.Tensor] = {}

    def candidate(self, key: Key, plan: Mapping[str, LayerQuant | None]) -> Candidate:
        """`key` and `plan` are per layer in the space's order; the Candidate in stage order."""
        index = {path: i for i, path in enumerate(plan)}
        order = [index[stage.path] for stage in self.stages]
        formats = tuple(plan[stage.path] or _FLOAT for stage in self.stages)
        return Candidate(tuple(key[i] for i in order), formats)

    def groups(self, candidates: Sequence[Candidate]) -> list[tuple[int, list[int]]]:
        """Split `candidates` into (stage, indexes) groups that `logits` runs together: those
        that differ only in the weight and bias of `stage`, the deepest stage at which any of
        them differ, in order of first appearance."""
        last = len(self.stages) - 1
        varying = [k for k in range(last + 1) if len({c.key[k] for c in candidates}) > 1]
        stage = varying[-1] if varying else last
        if not self.stages[stage].stackable:
            return [(last, [i]) for i in range(len(candidates))]
        fan = fan_in(self.stages[stage].layer)
        buckets: dict[tuple, list[int]] = {}
        for i, c in enumerate(candidates):
            # Stacked candidates share one accumulator and result type, and one dtype for the
            # sums: float64 costs twice float32's time, so those that need it run apart.
            fmt = c.formats[stage]
            wide = sum_dtype(fmt, fan)
            shared = (c.key[:stage], fmt.data_in, fmt.accum, fmt.result, wide, c.key[stage + 1 :])
            buckets.setdefault(shared, []).append(i)
        # At least MIN_ROWS rows per block, so per-call overheads stay small against the work.
        size = max(1, self.block_bytes // (min(MIN_ROWS, self.n) * self._row_bytes(stage)))
        out = []
        for members in buckets.values():
            for start in range(0, len(members), size):
                part = members[start : start + size]
                # A lone candidate takes the cached path through every boundary instead.
                out.append((stage if len(part) > 1 else last, part))
        return out

    def logits(self, stage: int, members: Sequence[Candidate]) -> Iterator[torch.Tensor]:
        """The logits [rows, len(members), classes] of successive blocks of rows, for candidates
        that differ only in the weight and bias of `stage`. Run under torch.inference_mode().
        Run to its end, a counting runner's `tallies` are then each member's overflow.

        Blocks keep every tensor after the stacked product small enough for the CPU's cache."""
        params = [self._weight_bias(stage, c.formats[stage]) for c in members]
        weight = torch.cat([w for w, _ in params])
        biases = [b for _, b in params if b is not None]  # all or none: one layer
        bias = torch.cat(biases) if biases else None
        x = self._stage_input(stage, members[0])
        g = len(members)
        rows = max(1, self.block_bytes // (g * self._row_bytes(stage)))
        # A dtype one member's sums need (float64, the only one) is exact for all of them
        # (`groups` stacks those that need it apart). It copies each block's input, which then
        # counts against the block's bytes too.
        fan = fan_in(self.stages[stage].layer)
        wide = next(filter(None, (sum_dtype(c.formats[stage], fan) for c in members)), None)
        if wide is not None:
            rows = max(1, min(rows, self.block_bytes // (x[0].numel() * wide.itemsize)))
        if not self.count and self._by_class(stage, members[0].formats[stage], x):
            yield from _by_class(x, weight, bias, wide, self.stages[stage].tail, g, rows)
            return
        op = functools.partial(self.stages[stage].layer_op, fmt=members[0].formats[stage])
        counts = Counts(g) if self.count else None
        for start in range(0, self.n, rows):
            block = x[start : start + rows]
            out = computed_in(wide, op, block, weight, bias)
            if counts is not None:
                self._count_stacked(stage, members, params, block, counts)
            b = len(out)
            # reshape copies only the few outputs of a narrow layer (see chain.NARROW).
            h = out.reshape(b * g, out.shape[1] // g, *out.shape[2:])
            h = run(self.stages[stage].tail, h)
            for k in range(stage + 1, len(self.stages)):
                fmt = members[0].formats[k].data_in
                if counts is not None:
                    over = count(h, fmt, g)
                    counts.add((self.stages[k].path, "data_in"), over, h.numel() // g)
                h = self._forward(k, members[0], _quantized(h, fmt), counts, g)
            yield h.reshape(b, g, -1)
        if counts is not None:
            self.tallies = self._member_tallies(stage, members, counts)

    def _by_class(self, stage: int, fmt: LayerQuant, x: torch.Tensor) -> bool:
        """Whether `_by_class` computes the stacked stage: the last one, a Linear layer on rows
        of features with the exact accumulator and result, and only elementwise modules after
        it, which give the same values whatever the layout."""
        last = self.stages[-1]
        return (
            stage == len(self.stages) - 1
            and isinstance(last.layer, nn.Linear)
            and x.dim() == 2
            and fmt.accum is None
            and fmt.result is None
            and all(type(m) in _ELEMENTWISE for m in last.tail)
        )

    def _count_stacked(
        self, stage: int, members: Sequence[Candidate], params: list, x: torch.Tensor,
        counts: Counts,
    ) -> None:  # fmt: skip
        """The accumulator's and result's overflow of each member at the stacked stage."""
        layer, path = self.stages[stage].layer, self.stages[stage].path
        for i, (c, (w, b)) in enumerate(zip(members, params, strict=True)):
            for name, (over, n) in datapath_tally(layer, x, w, b, c.formats[stage]).items():
                counts.add((path, name), over, n, at=i)

    def _member_tallies(
        self, stage: int, members: Sequence[Candidate], counts: Counts
    ) -> list[Tally]:
        first = members[0]
        tally = self.cache.tally((stage, first.key[:stage], first.formats[stage].data_in))
        for k in range(stage + 1, len(self.stages)):
            tally = merged(tally, self._param_tally(k, first.formats[k]))
        return [merged(merged(tally, self._param_tally(stage, c.formats[stage])), counts.of(i))
                for i, c in enumerate(members)]  # fmt: skip

    def _param_tally(self, k: int, fmt: LayerQuant) -> Tally:
        key = (k, fmt.weight, fmt.bias)
        if key not in self._param_tallies:
            weight, bias = weight_bias(self.stages[k].layer)
            self._param_tallies[key] = param_tally(self.stages[k].path, fmt, weight, bias)
        return self._param_tallies[key]

    def _row_bytes(self, stage: int) -> int:
        return self._widths[stage] * self.head.element_size()

    def _boundary(self, k: int, c: Candidate) -> torch.Tensor:
        """The input of stage k before quantization: it depends only on the stages before k."""
        if k == 0:
            return self.head
        key = (k, c.key[:k], None)
        value = self.cache.get(key)
        if value is None:
            x = self._stage_input(k - 1, c)
            counts = Counts(1) if self.count else None
            value = self._by_blocks(lambda rows: self._forward(k - 1, c, rows, counts), x, key)
            if counts is not None:
                before = self.cache.tally((k - 1, c.key[: k - 1], c.formats[k - 1].data_in))
                tally = merged(before, self._param_tally(k - 1, c.formats[k - 1]))
                self.cache.set_tally(key, merged(tally, counts.of(0)))
        return value

    def _stage_input(self, k: int, c: Candidate) -> torch.Tensor:
        fmt = c.formats[k].data_in
        if fmt is None:
            return self._boundary(k, c)
        key = (k, c.key[:k], fmt)
        value = self.cache.get(key)
        if value is None:
            counts = Counts(1) if self.count else None
            where = (self.stages[k].path, "data_in")

            def quantized(rows: torch.Tensor) -> torch.Tensor:
                if counts is not None:
                    counts.add(where, count(rows, fmt), rows.numel())
                return quantize_values(rows, fmt)

            value = self._by_blocks(quantized, self._boundary(k, c), key)
            if counts is not None:
                before = self.cache.tally((k, c.key[:k], None))
                self.cache.set_tally(key, merged(before, counts.of(0)))
        return value

    def _by_blocks(
        self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, key: BoundaryKey
    ) -> torch.Tensor:
        """`fn` over blocks of rows of x, into the tensor the cache entry `key` replaces when its
        shape fits: the temporaries stay small and no large tensor is allocated again, which
        would fragment the heap and make memory creep up over a long search."""
        rows = max(MIN_ROWS, self.block_bytes // self._max_row_bytes)
        first = fn(x[:rows])
        out = self.cache.take(key)
        if out is None or out.shape != (self.n, *first.shape[1:]) or out.dtype != first.dtype:
            out = torch.empty((self.n, *first.shape[1:]), dtype=first.dtype, device=first.device)
        out[:rows] = first
        for start in range(rows, self.n, rows):
            out[start : start + rows] = fn(x[start : start + rows])
        self.cache.put(key, out)
        return out

    def _forward(
        self, k: int, c: Candidate, x: torch.Tensor, counts: Counts | None = None, g: int = 1
    ) -> torch.Tensor:
        """Stage k of candidate c on its quantized input x (rows of g interleaved candidates
        that share stage k), its accumulator's and result's overflow added to `counts`."""
        weight, bias = self._weight_bias(k, c.formats[k])
        stage = self.stages[k]
        if counts is not None:
            found = datapath_tally(stage.layer, x, weight, bias, c.formats[k], g)
            for name, (over, n) in found.items():
                counts.add((stage.path, name), over, n)
        return run(stage.tail, stage.layer_op(x, weight, bias, c.formats[k]))

    def _weight_bias(self, k: int, fmt: LayerQuant) -> tuple[torch.Tensor, torch.Tensor | None]:
        layer = self.stages[k].layer
        bias = None if layer.bias is None else self._param(k, "bias", fmt.bias)
        return self._param(k, "weight", fmt.weight), bias

    def _param(self, k: int, name: str, fmt: NumberFormat | None) -> torch.Tensor:
        key = (k, name, fmt)
        if key not in self._params:
            value = getattr(self.stages[k].layer, name).detach()
            self._params[key] = value if fmt is None else quantize_values(value, fmt)
        return self._params[key]

    def _widths_from(self, row: torch.Tensor) -> list[int]:
        """Per stage: the most values per sample of any tensor from its layer's output on, which
        bounds the memory a group of candidates stacked at that stage needs per candidate."""
        sizes: list[list[int]] = []
        for stage in self.stages:
            row = stage.layer(row)
            sizes.append([row.numel()])
            for module in stage.tail:
                row = module(row)
                sizes[-1].append(row.numel())
        return [max(n for later in sizes[k:] for n in later) for k in range(len(sizes))]


def _by_class(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, wide: torch.dtype | None,
    tail: Sequence[nn.Module], g: int, rows: int,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """The logits [b, g, classes] of a stacked last Linear layer, block by block, as W x^T: each
    candidate's classes are rows of samples, a view that batched metrics read without copying
    (`metrics.forward_sums`), and the product runs along the samples, as `chain.NARROW` does.
    Computed in `wide` when given, rounded once to x's dtype (`datapath.computed_in`)."""
    dtype = wide or x.dtype
    weight = weight.to(dtype)
    column = None if bias is None else bias.to(dtype)[:, None]
    for start in range(0, len(x), rows):
        block = x[start : start + rows].t().to(dtype)
        out = torch.mm(weight, block) if column is None else torch.addmm(column, weight, block)
        h = _owned(tail, out.to(x.dtype))
        yield h.reshape(g, -1, h.shape[1]).permute(2, 0, 1)


def _owned(tail: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
    """`run(tail, h)` for a tensor `h` that nothing else holds: a ReLU clamps it in place rather
    than allocating a block-sized result (the same values)."""
    for module in tail:
        h = torch.relu_(h) if type(module) is nn.ReLU else module(h)
    return h


def _quantized(x: torch.Tensor, fmt: NumberFormat | None) -> torch.Tensor:
    return x if fmt is None else quantize_values(x, fmt)
