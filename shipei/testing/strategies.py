"""Random well-typed graphs, DSL programs and in-domain inputs, built from the op registry.

A graph is generated as a list of steps, each one op applied to values that already exist or
to fresh graph inputs or params; every sink becomes an output. All randomness goes through a
`Chooser`, so the same generator serves Hypothesis (`graphs()`, which shrinks a failing graph by
shrinking its steps) and the fuzzer (`generate(seed)`, a plain PRNG, much faster).

Ops come from `all_ops()` and each step builds its node through the registry's type rule, so a
new op is generated as soon as it is registered. How an op's operands and attributes are chosen
to fit existing values is a table keyed by op name or fusion kind (`FITTERS`); an op without a
fitter is built from its `ir/samples.py` samples. A fitter's plan is checked by the type rule
and the targets' capability tables, and a rejected plan falls back to a sample, so generation
never rejects a whole example.

Values stay finite because ops with an input domain (`OpDef.domains`: log wants positives, div a
nonzero divisor, ...) and ops whose result jumps at some float value (floor, comparisons,
float-to-int casts, where a last-bit difference between a framework and the reference would
flip the result) read those operands straight from graph inputs, whose values `make_inputs`
draws from the intersection of their users' domains.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar

import numpy as np

from ..ir.errors import ShipeiError
from ..ir.graph import Builder, Graph, Init, Value
from ..ir.inputs import operand_domains, random_inputs
from ..ir.registry import AttrKind, FusionKind, all_ops, get_op
from ..ir.samples import dtypes_for, samples
from ..ir.types import Dim, DType, Sym, TensorType, broadcast_shapes, dim_mul, dim_product, eval_dim

T = TypeVar("T")

#: Dtypes in the order shrinking prefers them (the first is the simplest).
DTYPES = (DType.f32, DType.f64, DType.i64, DType.i32, DType.bool, DType.f16, DType.bf16)
#: The shape symbol fresh inputs may use, and the value `make_inputs` gives it.
SYMBOL, SYMBOL_VALUE = "B", 3
MAX_DIM = 4
MAX_ELEMENTS = 1024
#: Attribute values beyond an op's samples, drawn now and then: whatever the type rule accepts,
#: every target must implement (a target that rejects one shows a gap in the type rule).
PROBES: dict[AttrKind, tuple[Any, ...]] = {AttrKind.FLOAT: (0.0, 1.0, -1.0, 2.5), AttrKind.STR: ("other",)}
#: Ops whose float operands come straight from graph inputs: the result jumps at some operand
#: value (floor, comparisons), or grows too fast for a computed operand (pow).
INPUT_ONLY = frozenset({"floor", "eq", "ne", "lt", "le", "gt", "ge", "pow"})


class Chooser(Protocol):
    """The source of every random decision; `boolean(p)` is True with probability about p.
    `group(fn)` runs `fn`, whose decisions form one unit (a step Hypothesis can delete whole)."""

    def integer(self, lo: int, hi: int) -> int: ...
    def choice(self, items: Sequence[T]) -> T: ...
    def boolean(self, p: float = 0.5) -> bool: ...
    def group(self, fn: Callable[[], T]) -> T: ...


class RandomChooser:
    """Decisions from a seeded PRNG: the fuzzer's fast path."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]

    def boolean(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def group(self, fn: Callable[[], T]) -> T:
        return fn()


class DrawChooser:
    """Decisions drawn from Hypothesis, so it can shrink them (integers toward lo, booleans to False)."""

    def __init__(self, draw: Callable[[Any], Any]):
        from hypothesis import strategies as st

        self.draw = draw
        self.st = st

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))

    def choice(self, items: Sequence[T]) -> T:
        return self.draw(self.st.sampled_from(items))

    def boolean(self, p: float = 0.5) -> bool:
        return self.draw(self.st.booleans())

    def group(self, fn: Callable[[], T]) -> T:
        """`fn` inside a nested draw, so its decisions form one span the shrinker can delete."""

        @self.st.composite
        def inner(draw: Callable[[Any], Any]) -> T:
            outer, self.draw = self.draw, draw
            try:
                return fn()
            finally:
                self.draw = outer

        return self.draw(inner())


@dataclass(frozen=True)
class Space:
    """What generation may use: each allowed op with the dtypes its nodes may hold, and sizes."""

    dtypes: dict[str, tuple[DType, ...]]
    min_nodes: int = 1
    max_nodes: int = 8
    symbolic: bool = True
    params: bool = True

    @property
    def ops(self) -> tuple[str, ...]:
        """Simplest first (elementwise before reductions before opaque ops), for shrinking."""
        return tuple(sorted(self.dtypes, key=lambda op: (get_op(op).fusion, op)))


def make_space(ops: Iterable[str] | None = None, dtypes: Iterable[DType | str] | None = None,
               targets: Iterable[str] | None = None, min_nodes: int = 1, max_nodes: int = 8,
               symbolic: bool = True, params: bool = True) -> Space:
    """The ops x dtypes every requested target lowers, restricted to `ops` and `dtypes`."""
    registry = all_ops()
    # transfers are the partition pass's, between programs: no model written or drawn holds one
    names = [n for n, d in registry.items() if "transfer" not in d.traits] if ops is None else list(ops)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ShipeiError(f"unknown op '{unknown[0]}'", hint="ops are the keys of shipei.ir.registry.all_ops()")
    wanted = frozenset(DType.parse(d) if isinstance(d, str) else d for d in (dtypes or DTYPES))
    caps = [_capabilities(t) for t in (targets or ())]
    table = {}
    for op in names:
        allowed = wanted.intersection(*(c.get(op, frozenset()) for c in caps))
        if allowed & _accepted(op):
            table[op] = tuple(d for d in DTYPES if d in allowed)
    if not table:
        raise ShipeiError("no op can be generated with these ops, dtypes and targets")
    if not 1 <= min_nodes <= max_nodes:
        raise ShipeiError(f"need 1 <= min_nodes <= max_nodes, got {min_nodes} and {max_nodes}")
    return Space(table, min_nodes, max_nodes, symbolic, params)


def _capabilities(target: str) -> dict[str, frozenset[DType]]:
    from ..codegen import capabilities

    return capabilities(target)  # cached there, per target and registry


@cache
def _accepted(op: str) -> frozenset[DType]:
    """Dtypes the op's type rule takes on its data operands (constant and iota: their dtype attr)."""
    return frozenset(dtypes_for(op))


class GeneratedGraph(Graph):
    """A generated graph; its repr is the DSL program, so Hypothesis reports read as source."""

    def __repr__(self) -> str:
        from ..frontend.unparse import unparse

        try:
            return "program:\n" + unparse(self)
        except ShipeiError:
            return f"GeneratedGraph({self.name}, {len(self.nodes)} nodes)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class GraphGen:
    """Builds one graph step by step; fitters call its helpers to pick operands and attrs."""

    def __init__(self, space: Space, chooser: Chooser, name: str = "G", reuse: float = 0.75):
        self.space = space
        self.ch = chooser
        self.graph = GeneratedGraph(name)
        self.b = Builder(self.graph)
        self.pool: list[Value] = []
        self.used: set[Value] = set()
        self.prefer: Value | None = None  # the value the node being built should read
        self.reuse = reuse

    def build(self) -> GeneratedGraph:
        count = self.ch.integer(self.space.min_nodes, self.space.max_nodes)
        for _ in range(count):
            self.ch.group(self.step)
        for op in self.space.ops:  # a graph has at least one node, whatever the draws
            if self.graph.nodes:
                break
            self.step(op)
        users = self.graph.users()
        self.graph.outputs = [r for node in self.graph.nodes for r in node.results if r not in users]
        return self.graph

    def step(self, op: str | None = None) -> bool:
        """Add one node; False when neither its fitter nor its samples fit (nothing is added).

        Usually the node extends a chain: it is chosen to read a value nothing reads yet.
        """
        self.prefer = None
        # The op is drawn first, from the whole list, so that a step reads its draws the same way
        # whatever the steps before it made: deleting a step while shrinking keeps the others.
        op = op or self.ch.choice(self.space.ops)
        dtypes = [d for d in self.space.dtypes[op] if d in _accepted(op)]
        if not dtypes:
            return False
        sinks = [v for v in self.pool if v.producer is not None and v not in self.used and v.dtype in dtypes]
        # Drawn whether or not they are used, so that the draws after them mean the same thing when
        # shrinking deletes the step that made a sink (the chain's link) before this one.
        extend, sink, fallback = self.ch.boolean(0.7), self.ch.integer(0, 255), self.ch.choice(dtypes)
        if extend and sinks:
            self.prefer = sinks[sink % len(sinks)]
        wanted = self.prefer.dtype if self.prefer is not None else None
        dtype = wanted if wanted in dtypes else fallback
        mark = (len(self.graph.inputs), len(self.graph.params), len(self.graph.nodes), len(self.pool))
        for fit in (fitter(op), fit_sample):
            try:
                plan = fit(self, op, dtype)
                if plan is not None and self.add(op, *plan):
                    return True
            except ShipeiError:
                pass
            del self.graph.inputs[mark[0]:], self.graph.params[mark[1]:], self.graph.nodes[mark[2]:]
            del self.pool[mark[3]:]
        return False

    def add(self, op: str, operands: list[Value], attrs: dict[str, Any]) -> bool:
        results = self.b.op(op, *operands, **attrs)
        node = self.graph.nodes[-1]
        allowed = self.space.dtypes[op]
        if any(v.dtype not in allowed for v in node.operands + node.results):
            return False
        if any(elements(v.type) > MAX_ELEMENTS for v in results):
            return False
        self.pool.extend(results)
        self.used.update(node.operands)
        return True

    # -- operands -------------------------------------------------------------------------
    def operand(self, op: str, index: int, dtype: DType, fits: Callable[[Value], bool] = lambda v: True,
                make: Callable[[], tuple[Dim, ...]] | None = None, input_only: bool = False) -> Value:
        """Operand `index` of `op`: an existing value that `fits`, or a fresh one of shape `make()`.

        Operands with a domain or a discontinuity come only from graph inputs (see the module doc).
        """
        input_only = input_only or index in operand_domains(op) or index in _index_operands(op) or (
            op in INPUT_ONLY and dtype.is_float)
        if (self.prefer is not None and not input_only and self.prefer.dtype is dtype and fits(self.prefer)):
            v, self.prefer = self.prefer, None
            return v
        pool = self.graph.inputs if input_only else self.pool
        candidates = [v for v in pool if v.dtype is dtype and fits(v)]
        if candidates and self.ch.boolean(self.reuse):
            sinks = [v for v in candidates if v not in self.used]
            return self.ch.choice(sinks if sinks and self.ch.boolean(0.7) else candidates)  # favour chains
        return self.fresh(TensorType(dtype, tuple(make() if make else self.shape())), param_ok=not input_only)

    def fresh(self, t: TensorType, param_ok: bool = True) -> Value:
        if param_ok and self.space.params and t.is_static and t.dtype.is_float and self.ch.boolean(0.25):
            v = self.b.add_param(f"w{len(self.graph.params)}", t, Init("uniform", (("low", -1.0), ("high", 1.0))))
        else:
            v = self.b.input(f"x{len(self.graph.inputs)}", t)
        self.pool.append(v)
        return v

    def dim(self, lo: int = 1, hi: int = MAX_DIM) -> int:
        return self.ch.integer(lo, hi)

    def shape(self, lo: int = 0, hi: int = 4, symbolic: bool = True) -> tuple[Dim, ...]:
        dims: list[Dim] = [self.dim() for _ in range(self.ch.integer(lo, hi))]
        if dims and symbolic and self.space.symbolic and self.ch.boolean(0.25):
            dims[0] = Sym.named(SYMBOL)
        return tuple(dims)

    def broadcast_shape(self, shape: tuple[Dim, ...]) -> tuple[Dim, ...]:
        """A shape that broadcasts with `shape`: a suffix of it with some dims set to 1."""
        out = list(shape[len(shape) - self.ch.integer(0, len(shape)):])
        return tuple(1 if self.ch.boolean(0.25) else d for d in out)

    def axes(self, rank: int) -> tuple[int, ...]:
        """Distinct axes in random order, some spelled negatively."""
        left = list(range(rank))
        picked = [left.pop(self.ch.integer(0, len(left) - 1)) for _ in range(self.ch.integer(1, rank))]
        return tuple(a - rank if self.ch.boolean(0.3) else a for a in picked)

    def axis(self, rank: int) -> int:
        a = self.ch.integer(0, rank - 1)
        return a - rank if self.ch.boolean(0.3) else a

    def pair(self, lo: int, hi: int) -> tuple[int, ...]:
        """A window attribute as one int or a pair, both spellings the IR takes."""
        if self.ch.boolean(0.3):
            return (self.ch.integer(lo, hi),)
        return self.ch.integer(lo, hi), self.ch.integer(lo, hi)

    def attrs(self, op: str, given: dict[str, Any], dtype: DType | None = None) -> dict[str, Any]:
        """`given`, plus the op's other attributes drawn by kind from its samples and defaults."""
        out = dict(given)
        for name, spec in get_op(op).attrs.items():
            if name in out:
                continue
            if spec.kind is AttrKind.BOOL:
                out[name] = self.ch.boolean()
            elif spec.kind is AttrKind.DTYPE and dtype is not None:
                out[name] = dtype
            else:
                seeds = _attr_seeds(op, name)
                if spec.kind in PROBES and (not seeds or self.ch.boolean(0.1)):
                    seeds = PROBES[spec.kind]  # values the samples do not show; the type rule judges them
                if not seeds:
                    raise ShipeiError(f"no value to draw for {op}.{name}")
                out[name] = self.ch.choice(seeds)
        return out

    def bound_symbols(self) -> list[Sym]:
        names = sorted({s for v in self.graph.inputs for d in v.shape for s in getattr(d, "symbols", ())})
        return [Sym.named(s) for s in names]


def elements(t: TensorType) -> int:
    return int(np.prod([eval_dim(d, {SYMBOL: SYMBOL_VALUE}) for d in t.shape], dtype=np.int64))


@cache
def _attr_seeds(op: str, name: str) -> tuple[Any, ...]:
    """Values of an attribute known to be valid: those in the op's samples, and its default."""
    spec = get_op(op).attrs[name]
    values = [s.attrs[name] for s in samples(op) if name in s.attrs]
    if not spec.required:
        values.append(spec.default)
    out: list[Any] = []
    for v in values:
        if not any(type(v) is type(o) and repr(v) == repr(o) for o in out):
            out.append(v)
    return tuple(out)


def _index_operands(op: str) -> frozenset[int]:
    """Operands that are indices (`OpDef.indices`): their values need a bound, so inputs only."""
    return frozenset(get_op(op).index_operands())


def _broadcasts(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> bool:
    try:
        broadcast_shapes(a, b)
        return True
    except ShipeiError:
        return False


def _static(d: Dim) -> bool:
    return isinstance(d, int)


# -- fitters: choose operands and attributes for one op ----------------------------------
Plan = tuple[list[Value], dict[str, Any]]
Fitter = Callable[[GraphGen, str, DType], Plan | None]


def fit_elementwise(g: GraphGen, op: str, dtype: DType) -> Plan:
    return [g.operand(op, 0, dtype)], g.attrs(op, {})


def fit_cast(g: GraphGen, op: str, dtype: DType) -> Plan:
    to = g.ch.choice(g.space.dtypes[op])
    # float -> int truncates and float -> bool tests != 0: discontinuous, so from an input
    return [g.operand(op, 0, dtype, input_only=dtype.is_float and not to.is_float)], {"dtype": to}


def fit_broadcast(g: GraphGen, op: str, dtype: DType) -> Plan:
    """n-ary broadcasting ops: one operand anchors the shape, the others broadcast against it."""
    conditions = {i for s in samples(op) for i in s.bool_operands}
    n = len(get_op(op).operands)
    dtypes = [DType.bool if i in conditions else dtype for i in range(n)]
    first = g.ch.integer(0, n - 1)
    anchor = g.operand(op, first, dtypes[first])
    operands: list[Value] = []
    for i in range(n):
        operands.append(anchor if i == first else g.operand(
            op, i, dtypes[i], fits=lambda v: _broadcasts(v.shape, anchor.shape),
            make=lambda: g.broadcast_shape(anchor.shape)))
    return operands, g.attrs(op, {})


def fit_reduce(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype)
    axes = g.axes(x.type.rank) if x.type.rank and g.ch.boolean(0.8) else None
    return [x], g.attrs(op, {"axes": axes})


def fit_axis(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype, fits=lambda v: v.type.rank >= 1, make=lambda: g.shape(1, 4))
    return [x], g.attrs(op, {"axis": g.axis(x.type.rank)})


def fit_matmul(g: GraphGen, op: str, dtype: DType) -> Plan:
    a = g.operand(op, 0, dtype, fits=lambda v: v.type.rank >= 2, make=lambda: g.shape(2, 4))
    k, batch = a.shape[-1], a.shape[:-2]
    b = g.operand(op, 1, dtype, make=lambda: g.broadcast_shape(batch) + (k, g.dim()),
                  fits=lambda v: v.type.rank >= 2 and v.shape[-2] == k and _broadcasts(v.shape[:-2], batch))
    return [a, b], {}


def _nchw(g: GraphGen, op: str, dtype: DType) -> Value:
    return g.operand(op, 0, dtype, fits=lambda v: v.type.rank == 4 and all(map(_static, v.shape[1:])),
                     make=lambda: (Sym.named(SYMBOL) if g.space.symbolic and g.ch.boolean(0.25) else g.dim(1, 2),
                                   g.dim(1, 4), g.dim(3, 7), g.dim(3, 7)))


def fit_conv2d(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = _nchw(g, op, dtype)
    c, h, w = x.shape[1:]
    groups = g.ch.choice([d for d in range(1, c + 1) if c % d == 0])
    stride, padding, dilation = g.pair(1, 2), g.pair(0, 1), g.pair(1, 2)
    ph, pw = padding * 2 if len(padding) == 1 else padding
    dh, dw = dilation * 2 if len(dilation) == 1 else dilation
    kh = g.ch.integer(1, max(1, min(3, (h + 2 * ph - 1) // dh + 1)))
    kw = g.ch.integer(1, max(1, min(3, (w + 2 * pw - 1) // dw + 1)))
    wshape = (groups * g.ch.integer(1, 2), c // groups, kh, kw)
    weight = g.operand(op, 1, dtype, fits=lambda v: v.shape == wshape, make=lambda: wshape)
    return [x, weight], {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


def fit_pool(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = _nchw(g, op, dtype)
    h, w = x.shape[2:]
    kh, kw = g.ch.integer(1, min(3, h)), g.ch.integer(1, min(3, w))
    kernel = (kh,) if kh == kw and g.ch.boolean(0.3) else (kh, kw)
    padding = (g.ch.integer(0, kh // 2), g.ch.integer(0, kw // 2))
    return [x], g.attrs(op, {"kernel": kernel, "stride": g.pair(1, 3), "padding": padding})


def fit_layer_norm(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype, fits=lambda v: v.type.rank >= 1, make=lambda: g.shape(1, 4))
    norm = x.shape[x.type.rank - g.ch.integer(1, x.type.rank):]
    w, b = (g.operand(op, i, dtype, fits=lambda v: v.shape == norm, make=lambda: norm) for i in (1, 2))
    return [x, w, b], g.attrs(op, {})


def fit_batch_norm(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype, fits=lambda v: v.type.rank >= 2, make=lambda: g.shape(2, 4))
    c = (x.shape[1],)
    stats = [g.operand(op, i, dtype, fits=lambda v: v.shape == c, make=lambda: c) for i in range(1, 5)]
    return [x, *stats], g.attrs(op, {})


def fit_reshape(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype)
    shape = list(x.shape)
    for _ in range(g.ch.integer(1, 2)):
        move = g.ch.integer(0, 3)
        if move == 0 and len(shape) >= 2:  # merge two neighbours
            i = g.ch.integer(0, len(shape) - 2)
            shape[i:i + 2] = [dim_mul(shape[i], shape[i + 1])]
        elif move == 1 and any(_static(d) and d > 1 for d in shape):  # split a dim into two factors
            i = g.ch.choice([i for i, d in enumerate(shape) if _static(d) and d > 1])
            f = g.ch.choice([f for f in range(1, shape[i] + 1) if shape[i] % f == 0])
            shape[i:i + 1] = [f, shape[i] // f]
        elif move == 2:
            shape.insert(g.ch.integer(0, len(shape)), 1)
        else:
            shape = [dim_product(shape)] if shape else []
    return [x], {"shape": tuple(shape)}


def fit_transpose(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype)
    perm = list(range(x.type.rank))
    for i in reversed(range(1, len(perm))):
        j = g.ch.integer(0, i)
        perm[i], perm[j] = perm[j], perm[i]
    return [x], {"perm": tuple(perm)}


def fit_broadcast_to(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype)
    lead = [g.dim() for _ in range(g.ch.integer(0, 2))]
    return [x], {"shape": tuple(lead + [g.dim() if d == 1 and g.ch.boolean() else d for d in x.shape])}


def fit_concat(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype, fits=lambda v: v.type.rank >= 1, make=lambda: g.shape(1, 4))
    rank = x.type.rank
    axis = g.axis(rank)
    a = axis % rank

    def fits(v: Value) -> bool:
        return v.type.rank == rank and all(v.shape[i] == x.shape[i] for i in range(rank) if i != a)

    def make() -> tuple[Dim, ...]:
        return x.shape[:a] + (g.dim(),) + x.shape[a + 1:]

    operands = [x] + [g.operand(op, 1, dtype, fits=fits, make=make) for _ in range(g.ch.integer(0, 2))]
    if g.ch.boolean(0.3):
        operands.reverse()
    return operands, {"axis": axis}


def _static_axes(v: Value) -> list[int]:
    return [i for i, d in enumerate(v.shape) if _static(d)]


def fit_split(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype, fits=lambda v: bool(_static_axes(v)), make=lambda: g.shape(0, 3) + (g.dim(),))
    a = g.ch.choice(_static_axes(x))
    size = x.shape[a]
    cuts = sorted({g.ch.integer(1, size - 1) for _ in range(g.ch.integer(0, min(2, size - 1)))})
    bounds = [0, *cuts, size]
    sizes = tuple(b - a_ for a_, b in zip(bounds, bounds[1:]))
    return [x], {"sizes": sizes, "axis": a - x.type.rank if g.ch.boolean(0.3) else a}


def fit_slice(g: GraphGen, op: str, dtype: DType) -> Plan:
    """Slices as DSL indexing writes them: ascending axes, 0 <= start < stop <= dim, step >= 1."""
    x = g.operand(op, 0, dtype, fits=lambda v: bool(_static_axes(v)), make=lambda: g.shape(0, 3) + (g.dim(),))
    static = _static_axes(x)
    axes = sorted({g.ch.choice(static) for _ in range(g.ch.integer(1, len(static)))})
    starts = [g.ch.integer(0, x.shape[a] - 1) for a in axes]
    stops = [g.ch.integer(s + 1, x.shape[a]) for s, a in zip(starts, axes)]
    steps = [g.ch.integer(1, 3) for _ in axes]
    return [x], {"axes": tuple(axes), "starts": tuple(starts), "stops": tuple(stops), "steps": tuple(steps)}


def fit_gather(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype, fits=lambda v: bool(_static_axes(v)), make=lambda: g.shape(0, 2) + (g.dim(),))
    a = g.ch.choice(_static_axes(x))
    index_dtype = g.ch.choice([d for d in g.space.dtypes[op] if d.is_int] or [DType.i64])
    indices = g.operand(op, 1, index_dtype, make=lambda: g.shape(0, 2))
    return [x, indices], {"axis": a - x.type.rank if g.ch.boolean(0.3) else a}


def fit_pad(g: GraphGen, op: str, dtype: DType) -> Plan:
    x = g.operand(op, 0, dtype)
    pads = tuple(g.ch.integer(0, 2) if g.ch.boolean() else 0 for _ in range(2 * x.type.rank))
    return [x], g.attrs(op, {"pads": pads})


_CONSTANTS = {"float": (-2.0, -1.5, -0.5, 0.0, 0.25, 1.0, 3.0), "int": (-3, -1, 0, 1, 2, 5), "bool": (False, True)}


def fit_constant(g: GraphGen, op: str, dtype: DType) -> Plan:
    shape = tuple(g.dim(1, 3) for _ in range(g.ch.integer(0, 2)))
    kind = "float" if dtype.is_float else "int" if dtype.is_int else "bool"
    values = [g.ch.choice(_CONSTANTS[kind]) for _ in range(int(np.prod(shape, dtype=np.int64)))]
    return [], {"value": np.array(values).reshape(shape).astype(dtype.numpy), "dtype": dtype}


def fit_iota(g: GraphGen, op: str, dtype: DType) -> Plan:
    symbols = g.bound_symbols()
    length: Dim = g.ch.choice(symbols) if symbols and g.ch.boolean(0.3) else g.dim()
    return [], {"length": length, "dtype": dtype}


def fit_sample(g: GraphGen, op: str, dtype: DType) -> Plan:
    """Any op: operand shapes and attributes of one of its samples, at `dtype`."""
    options = samples(op)
    if not options:
        return None
    sample = g.ch.choice(options)
    operands = []
    for i, shape in enumerate(sample.shapes):
        d = DType.i64 if i in _index_operands(op) else DType.bool if i in sample.bool_operands else dtype
        operands.append(g.operand(op, i, d, fits=lambda v, s=shape: v.shape == s, make=lambda s=shape: s))
    return operands, g.attrs(op, dict(sample.attrs), dtype)


FITTERS: dict[str, Fitter] = {
    "cast": fit_cast, "softmax": fit_axis, "log_softmax": fit_axis, "matmul": fit_matmul, "conv2d": fit_conv2d,
    "max_pool2d": fit_pool, "avg_pool2d": fit_pool, "layer_norm": fit_layer_norm, "batch_norm": fit_batch_norm,
    "reshape": fit_reshape, "transpose": fit_transpose, "broadcast_to": fit_broadcast_to, "concat": fit_concat,
    "split": fit_split, "slice": fit_slice, "gather": fit_gather, "pad": fit_pad, "constant": fit_constant,
    "iota": fit_iota,
}


def fitter(op: str) -> Fitter:
    """The op's fitter: by name, else by fusion kind, else its samples."""
    if op in FITTERS:
        return FITTERS[op]
    opdef = get_op(op)
    required = [a for a in opdef.attrs.values() if a.required]
    if opdef.fusion is FusionKind.ELEMWISE and len(opdef.operands) == 1 and not required:
        return fit_elementwise
    if opdef.fusion in (FusionKind.ELEMWISE, FusionKind.BROADCAST) and not opdef.variadic and not required:
        return fit_broadcast
    if opdef.fusion is FusionKind.REDUCTION and set(opdef.attrs) == {"axes", "keepdims"}:
        return fit_reduce
    return fit_sample


def generate(seed: int, space: Space | None = None, name: str = "G") -> GeneratedGraph:
    """One random graph from a seed (the fuzzer's generator; `graphs()` is Hypothesis's)."""
    return GraphGen(space or make_space(), RandomChooser(seed), name).build()


# -- inputs ------------------------------------------------------------------------------
class Inputs(list):
    """Input arrays for a graph, remembering the seed they were drawn from."""

    def __init__(self, arrays: Iterable[np.ndarray], seed: int | None = None):
        super().__init__(arrays)
        self.seed = seed

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self)
        return f"Inputs(seed={self.seed}, [{shapes}])"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def make_inputs(graph: Graph, seed: int = 0, dims: dict[str, int] | None = None, scale: float = 3.0) -> Inputs:
    """One array per graph input, inside the domain of every op that reads it (`ir.inputs`).

    Floats are uniform in [-scale, scale], half of the inputs rounded to eighths (so comparisons
    and maxima meet ties); positive, nonnegative and nonzero domains shift them away from zero.
    Integer inputs used as gather indices lie in [0, n); others in [-4, 4]. Shape symbols take
    `dims[name]`, else 3.
    """
    return Inputs(random_inputs(graph, seed, dims, SYMBOL_VALUE, scale=scale, ties=True, ints=(-4, 5)), seed)


# -- Hypothesis strategies ---------------------------------------------------------------
def graphs(ops: Iterable[str] | None = None, max_nodes: int = 8, dtypes: Iterable[DType | str] | None = None,
           targets: Iterable[str] | None = None, min_nodes: int = 1, symbolic: bool = True,
           params: bool = True):
    """Strategy: well-typed, verified graphs of `min_nodes`..`max_nodes` nodes from the registry.

    `ops` and `dtypes` restrict what is drawn; `targets` keeps to the ops x dtypes every one of
    them lowers (their capability tables). `symbolic` allows a shape symbol `B`; `params` lets
    operands be weights. Every sink is an output. Shrinks toward fewer, simpler nodes.
    """
    from hypothesis import strategies as st

    space = make_space(ops, dtypes, targets, min_nodes, max_nodes, symbolic, params)

    @st.composite
    def draw_graph(draw: Callable[[Any], Any]) -> GeneratedGraph:
        return GraphGen(space, DrawChooser(draw), reuse=0.5).build()

    return draw_graph()


def programs(**kwargs: Any):
    """Strategy: DSL source text of random models; takes `graphs()`'s arguments."""
    from ..frontend.unparse import unparse

    return graphs(**kwargs).map(unparse)


def placements(graph: Graph, targets: Iterable[str] | None = None, device: str = "cpu", share: float = 0.6):
    """Strategy: a placement per node of `graph` for `assert_lowering_correct(..., placements=...)`:
    about `share` of the nodes hinted to a random target among `targets` (default: every available
    one) that lowers the node, as "target:device"; None for the rest, which the cost model places.
    Nodes without operands stay None: they are copied to wherever they are read."""
    from hypothesis import strategies as st

    from ..codegen.frameworks import available_targets

    names = list(targets) if targets is not None else available_targets()
    choices = []
    for node in graph.nodes:
        able = [f"{t}:{device}" for t in names
                if all(v.dtype in _capabilities(t).get(node.op, ()) for v in (*node.operands, *node.results))]
        hint = st.sampled_from(able) if able and node.operands else st.none()
        choices.append(st.one_of(st.none(), hint) if share < 1 else hint)
    return st.tuples(*choices).map(list) if choices else st.just([])


def inputs_for(graph: Graph, dims: dict[str, int] | None = None):
    """Strategy: in-domain inputs for `graph` (an `Inputs` list that remembers its seed)."""
    from hypothesis import strategies as st

    return st.integers(0, 2**32 - 1).map(lambda seed: make_inputs(graph, seed, dims))
