"""The ILP strategy's surrogate and solver: each tensor of each layer is one group whose joint
choices (width x frac width, or a format's fields together) are one-hot binaries; a metric is
predicted as a constant plus one coefficient per chosen option, plus, for the pairs of a
layer's input and weight groups, one per product variable (what makes `bops`, bilinear in the
two widths, exactly linear). `scipy.optimize.milp` (HiGHS) finds the best prediction under
the constraints; no-good cuts exclude the candidates already measured."""

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bitscout.quant.catalog import DATAPATH, TENSORS
from bitscout.quant.space import Choice, Config, Dimension, SearchSpace

if TYPE_CHECKING:
    from scipy import sparse

MAX_JOINT = 64  # a tensor with more joint choices is probed one field at a time
RIDGE = 1e-3  # keeps the least squares fit defined where one-hot columns are collinear


def tensor_of(field: str) -> str:
    """The tensor a layer table's field sets; "layer" for shared fields (rounding, ...)."""
    return next((t for t in (*TENSORS, *DATAPATH) if field.startswith(f"{t}_")), "layer")


@dataclass(frozen=True)
class Group:
    """Dimensions chosen together: `options` lists their joint choices."""

    layer: str
    tensor: str
    dims: tuple[Dimension, ...]

    @property
    def options(self) -> list[tuple[Choice, ...]]:
        return list(itertools.product(*(d.choices for d in self.dims)))

    def of(self, config: Mapping[str, Choice]) -> tuple[Choice, ...]:
        return tuple(config[d.name] for d in self.dims)

    def apply(self, config: Mapping[str, Choice], option: Sequence[Choice]) -> Config:
        return {**config, **{d.name: c for d, c in zip(self.dims, option, strict=True)}}


def groups_of(space: SearchSpace) -> list[Group]:
    """The space's dimensions by (layer, tensor), in model order; a tensor whose joint
    choices exceed MAX_JOINT is split into one group per dimension."""
    found: dict[tuple[str, str], list[Dimension]] = {}
    for d in space.dimensions:
        found.setdefault((d.layer, tensor_of(d.field)), []).append(d)
    out = []
    for (layer, tensor), dims in found.items():
        if math.prod(len(d.choices) for d in dims) <= MAX_JOINT:
            out.append(Group(layer, tensor, tuple(dims)))
        else:
            out.extend(Group(layer, tensor, (d,)) for d in dims)
    return out


class Layout:
    """The variables: one binary per option of each group, then one continuous product
    variable per option pair of each (data_in, weight) group pair of a layer."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups = list(groups)
        self.options = [g.options for g in self.groups]
        self.index = [{o: i for i, o in enumerate(opts)} for opts in self.options]
        sizes = [len(o) for o in self.options]
        self.x_at = list(itertools.accumulate([0, *sizes]))[:-1]
        self.n_x = sum(sizes)
        keys = [(g.layer, g.tensor) for g in self.groups]
        by = {k: i for i, k in enumerate(keys) if keys.count(k) == 1}  # whole tensors only
        self.pairs = [(by[(layer, "data_in")], by[(layer, "weight")])
                      for layer, t in by if t == "data_in" and (layer, "weight") in by]  # fmt: skip
        self.y_at, at = [], self.n_x
        for a, b in self.pairs:
            self.y_at.append(at)
            at += sizes[a] * sizes[b]
        self.n = at

    def chosen(self, config: Mapping[str, Choice]) -> list[int]:
        """The option index of each group in `config`."""
        return [ix[g.of(config)] for g, ix in zip(self.groups, self.index, strict=True)]

    def features(self, config: Mapping[str, Choice]) -> np.ndarray:
        """`config` as the 0/1 vector of every variable."""
        z = np.zeros(self.n)
        picks = self.chosen(config)
        for at, j in zip(self.x_at, picks, strict=True):
            z[at + j] = 1.0
        for p, (a, b) in enumerate(self.pairs):
            z[self.y_at[p] + picks[a] * len(self.options[b]) + picks[b]] = 1.0
        return z

    def config(self, z: np.ndarray, base: Mapping[str, Choice]) -> Config:
        """The config whose binaries are set in solution `z` (`base` gives the key order)."""
        config = dict(base)
        for g, at, opts in zip(self.groups, self.x_at, self.options, strict=True):
            j = int(np.argmax(z[at : at + len(opts)]))
            config = g.apply(config, opts[j])
        return {k: config[k] for k in base}


@dataclass(frozen=True)
class Linear:
    """A metric predicted as `const + coef @ features(config)`."""

    const: float
    coef: np.ndarray

    def __call__(self, z: np.ndarray) -> float:
        return float(self.const + self.coef @ z)

    def __add__(self, other: "Linear") -> "Linear":
        return Linear(self.const + other.const, self.coef + other.coef)

    def __mul__(self, k: float) -> "Linear":
        return Linear(k * self.const, k * self.coef)


def exact_model(
    layout: Layout, ref: Mapping[str, Choice], value: Callable[[Config], float]
) -> Linear:
    """A metric that is a sum over tensors, with a bilinear term per layer's input and weight
    (model_size_bits, average_bitwidth, bops), from its values around `ref`: each option
    alone, each option pair of a product variable together. `value` is not an evaluation."""
    base = value(dict(ref))
    coef = np.zeros(layout.n)
    for g, at, opts in zip(layout.groups, layout.x_at, layout.options, strict=True):
        for j, option in enumerate(opts):
            coef[at + j] = value(g.apply(ref, option)) - base
    for p, (a, b) in enumerate(layout.pairs):
        ga, gb = layout.groups[a], layout.groups[b]
        pairs = itertools.product(enumerate(layout.options[a]), enumerate(layout.options[b]))
        for (i, oa), (j, ob) in pairs:
            both = value(gb.apply(ga.apply(ref, oa), ob)) - base
            k = layout.y_at[p] + i * len(layout.options[b]) + j
            coef[k] = both - coef[layout.x_at[a] + i] - coef[layout.x_at[b] + j]
    return Linear(base, coef)


@dataclass(frozen=True)
class Fit:
    """A fitted metric: its least squares model, and the root of its coefficients'
    covariance (`mean.coef[:n_x] + root @ z`, z standard normal, is a posterior draw)."""

    mean: Linear
    root: np.ndarray

    def draw(self, rng: np.random.Generator) -> Linear:
        """A model drawn from the posterior: where the measured candidates leave a choice's
        effect uncertain, its draws differ, so the solutions explore it (Thompson sampling)."""
        coef = self.mean.coef.copy()
        coef[: len(self.root)] += self.root @ rng.standard_normal(self.root.shape[1])
        return Linear(self.mean.const, coef)


def fitted_model(
    layout: Layout, configs: Sequence[Config], values: Sequence[float], good: float = 1.0
) -> Fit:
    """Least squares on the one-hot binaries over every measured config (the probes make it
    the additive model of each tensor's effect; the trials correct it where they disagree),
    lightly ridged so collinear columns stay defined; the intercept is not ridged. The
    noise is the residuals' mean square. An option no config has is predicted optimistically,
    as its group's best measured option (`good`: +1 larger is better, -1 smaller), without
    uncertainty: the program asks for it only where it would pay, and then it is probed."""
    feats = np.array([layout.features(c)[: layout.n_x] for c in configs])
    seen = np.asarray(feats.any(axis=0), dtype=bool)
    y = np.asarray(values, dtype=float)
    mean = y.mean()
    center = feats.mean(axis=0)
    f = (feats - center)[:, seen]
    gram = f.T @ f + RIDGE * np.eye(f.shape[1])
    w = np.zeros(layout.n_x)
    w[seen] = np.linalg.solve(gram, f.T @ (y - mean))
    for at, opts in zip(layout.x_at, layout.options, strict=True):
        part, known = w[at : at + len(opts)], seen[at : at + len(opts)]
        if known.any():
            part[~known] = good * np.max(good * part[known])
    coef = np.zeros(layout.n)
    coef[: layout.n_x] = w
    noise = float(np.sqrt(np.mean((y - mean - f @ w[seen]) ** 2)))
    root = np.zeros((layout.n_x, f.shape[1]))
    root[seen] = noise * np.linalg.inv(np.linalg.cholesky(gram)).T
    return Fit(Linear(float(mean - center @ w), coef), root)


@dataclass(frozen=True)
class Bound:
    """`lo <= model <= hi`."""

    model: Linear
    lo: float = -math.inf
    hi: float = math.inf


def _structure(layout: Layout) -> "tuple[sparse.csr_array, np.ndarray]":
    """One-hot rows (sum = 1) and product rows (a pair's y summed over one side = the other
    side's binary), as A z = b."""
    from scipy import sparse  # imported when solving: importing scipy sets warning filters

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []

    def row(entries: Sequence[tuple[int, float]], b: float) -> None:
        for c, v in entries:
            rows.append(len(rhs))
            cols.append(c)
            vals.append(v)
        rhs.append(b)

    for at, opts in zip(layout.x_at, layout.options, strict=True):
        row([(at + j, 1.0) for j in range(len(opts))], 1.0)
    for p, (a, b) in enumerate(layout.pairs):
        na, nb, y = len(layout.options[a]), len(layout.options[b]), layout.y_at[p]
        for i in range(na):
            row([(y + i * nb + j, 1.0) for j in range(nb)] + [(layout.x_at[a] + i, -1.0)], 0.0)
        for j in range(nb):
            row([(y + i * nb + j, 1.0) for i in range(na)] + [(layout.x_at[b] + j, -1.0)], 0.0)
    shape = (len(rhs), layout.n)
    return sparse.csr_array((vals, (rows, cols)), shape=shape), np.array(rhs)


def solve(
    layout: Layout, goal: Linear, bounds: Sequence[Bound], excluded: Sequence[Sequence[int]]
) -> np.ndarray | None:
    """The variables maximizing `goal` within `bounds`, excluding each candidate of
    `excluded` (its chosen option per group) by a no-good cut; None when none is left."""
    from scipy import sparse
    from scipy.optimize import LinearConstraint, milp

    a, b = _structure(layout)
    cons = [LinearConstraint(a, b, b)]
    for bound in bounds:
        const = bound.model.const
        cons.append(LinearConstraint(bound.model.coef[None, :], bound.lo - const, bound.hi - const))
    if excluded:
        picks = np.asarray(excluded) + np.asarray(layout.x_at)[None, :]
        rows = np.repeat(np.arange(len(picks)), picks.shape[1])
        cut = sparse.csr_array((np.ones(picks.size), (rows, picks.ravel())),
                               shape=(len(picks), layout.n))  # fmt: skip
        cons.append(LinearConstraint(cut, -np.inf, len(layout.groups) - 1))
    integrality = np.zeros(layout.n)
    integrality[: layout.n_x] = 1
    found = milp(
        -goal.coef,
        integrality=integrality,
        bounds=(0, 1),
        constraints=cons,
        options={"mip_rel_gap": 1e-9},
    )
    if found.x is None:
        return None
    return _full(layout, found.x)


def _full(layout: Layout, x: np.ndarray) -> np.ndarray:
    """The solution with its binaries rounded and its products recomputed from them."""
    z = np.zeros(layout.n)
    z[: layout.n_x] = np.round(x[: layout.n_x])
    picks = [int(np.argmax(z[at : at + len(o)]))
             for at, o in zip(layout.x_at, layout.options, strict=True)]  # fmt: skip
    for p, (a, b) in enumerate(layout.pairs):
        z[layout.y_at[p] + picks[a] * len(layout.options[b]) + picks[b]] = 1.0
    return z


def best(
    layout: Layout,
    goal: Linear,
    bounds: Sequence[Bound],
    excluded: Sequence[Sequence[int]],
    k: int,
) -> list[np.ndarray]:
    """Up to `k` distinct solutions in predicted order: each solve excludes the last."""
    out: list[np.ndarray] = []
    cuts = [list(e) for e in excluded]
    for _ in range(k):
        z = solve(layout, goal, bounds, cuts)
        if z is None:
            break
        out.append(z)
        cuts.append([int(np.argmax(z[at : at + len(o)]))
                     for at, o in zip(layout.x_at, layout.options, strict=True)])  # fmt: skip
    return out
