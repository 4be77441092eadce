"""The op registry: the single definition of every IR op.

An `OpDef` holds all that is known of an op: its name, operand names, attribute schema with
defaults, type rule, numpy reference and fusion kind (TVM's classification); its cost and
workspace; the input domain it needs for finite results; which axes it combines (so the batch
may be split); how the DSL spells it; sample uses; and, for a composite op, its decomposition
into simpler ones. The verifier, interpreter, printer/parser, passes, the frontend's builtins and
unparser, the property-test generators and every target's lowering table look ops up here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ShipeiError, SourceLoc
from .types import Dim, DType, Sym, TensorType

if TYPE_CHECKING:
    from .graph import Builder, Node, Value


class FusionKind(enum.IntEnum):
    """TVM's op patterns, ordered so that fusion rules can compare them."""

    ELEMWISE = 0
    BROADCAST = 1
    INJECTIVE = 2
    REDUCTION = 3
    OUT_FUSABLE = 4
    OPAQUE = 8


class AttrKind(enum.Enum):
    """What an attribute holds; drives validation, printing and parsing."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    DTYPE = "dtype"
    INTS = "ints"            # tuple of ints (axes, perm, strides)
    DIMS = "dims"            # tuple of dims, possibly symbolic (reshape target, broadcast shape)
    DIM = "dim"              # one possibly symbolic dim (iota length)
    OPT_INTS = "ints?"       # tuple of ints or None (axes=None means all)
    ARRAY = "array"          # numpy array literal (constants)


_REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """An attribute's kind and default; `minimum` bounds each of its ints (a stride of at least 1)."""

    kind: AttrKind
    default: Any = _REQUIRED
    minimum: int | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


TypeRule = Callable[[list[TensorType], dict[str, Any]], list[TensorType]]
Reference = Callable[..., Any]
#: Floating-point operations of one application, from its operands' and results' concrete shapes
#: and its attributes (what the partitioner's cost model weighs); see `ir.cost` for the default.
FlopRule = Callable[[list[tuple[int, ...]], list[tuple[int, ...]], dict[str, Any]], float]
#: Elements (of the result's dtype) an op holds while it runs beyond its operands and results, from
#: the same concrete shapes as a `FlopRule`.
WorkspaceRule = Callable[[list[tuple[int, ...]], list[tuple[int, ...]], dict[str, Any]], int]


#: Per operand, the axes whose elements the op combines (a reduction's axes, a contraction's);
#: from the node and the batch symbol. Splitting the batch is safe where none of them is a batch axis.
MixRule = Callable[["Node", str], list[tuple[int, ...]]]
#: The op rebuilt from simpler ones: a builder, the operands and the complete attributes in, the
#: results out. A target without a lowering of its own runs this (`ir.passes.decompose`).
Decomposition = Callable[["Builder", list["Value"], dict[str, Any]], list["Value"]]
#: What an operand must hold for a finite result: "positive", "nonnegative", "nonzero" or "small"
#: (exp's: |x| small enough not to overflow in f16).
DOMAINS = frozenset({"positive", "nonnegative", "nonzero", "small"})


@dataclass(frozen=True)
class Sample:
    """One use of an op, PyTorch OpInfo-style: operand shapes (the dtype is chosen per test),
    attributes, and the operands that are conditions (bool) rather than data (indices are i64:
    `OpDef.indices`)."""

    shapes: tuple[tuple[int, ...], ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    bool_operands: tuple[int, ...] = ()


@dataclass(frozen=True)
class Spelling:
    """How the DSL writes the op: a call of the builtin `function` (the op's name unless given)
    taking the operands, then the attributes as keywords renamed by `keywords` (`sum(x, axis=1,
    keepdim=true)` for reduce_sum's axes and keepdims), or the operator `operator` (`a + b`, `-x`,
    and `x[...]` for indexing).
    The frontend derives its builtins and the unparser its output from this."""

    function: str | None = None
    keywords: dict[str, str] = field(default_factory=dict)
    operator: str | None = None

    def keyword(self, attr: str) -> str:
        return self.keywords.get(attr, attr)


@dataclass(frozen=True)
class OpDef:
    """One op. `operands` are names; a trailing `*name` takes any number of operands. `dsl` is None
    for an op the DSL does not write (transfer)."""

    name: str
    operands: tuple[str, ...]
    attrs: dict[str, Attr]
    type_rule: TypeRule
    reference: Reference
    fusion: FusionKind
    traits: frozenset[str] = field(default_factory=frozenset)
    doc: str = ""
    flops: FlopRule | None = None  # None: as `ir.cost` counts by fusion kind
    workspace: WorkspaceRule | None = None  # None: nothing beyond operands and results
    domains: dict[str, str] = field(default_factory=dict)  # operand name -> one of DOMAINS
    mixes: MixRule | None = None  # None: nothing for elementwise and broadcast ops, else unknown
    dsl: Spelling | None = field(default_factory=Spelling)
    samples: tuple[Sample, ...] = ()  # () for an elementwise op: the generic unary or binary ones
    decomposition: Decomposition | None = None
    #: operand name -> the axis of operand 0 it indexes (an int, or the attribute holding it): its
    #: values must lie in [0, n) (gather's indices, cross_entropy's labels)
    indices: dict[str, int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for operand, domain in self.domains.items():
            if operand not in self.operands or domain not in DOMAINS:
                raise ValueError(f"{self.name}: domain {operand}={domain!r} names no operand or no domain")

    @property
    def function(self) -> str | None:
        """The DSL builtin that builds this op, if the DSL writes it as a call (an op spelled by
        an operator is a call too where its spelling names a function: `pow`, `matmul`)."""
        if self.dsl is None:
            return None
        return self.dsl.function if self.dsl.operator else self.dsl.function or self.name

    @property
    def composite(self) -> bool:
        return self.decomposition is not None

    def index_operands(self) -> dict[int, int | str]:
        """Operand position -> the axis of operand 0 it indexes (`indices`)."""
        return {i: self.indices[name] for i, name in enumerate(self.operands) if name in self.indices}

    def indexed_axis(self, node_attrs: dict[str, Any], spec: int | str) -> int:
        return node_attrs[spec] if isinstance(spec, str) else spec

    @property
    def variadic(self) -> bool:
        return bool(self.operands) and self.operands[-1].startswith("*")

    def complete_attrs(self, attrs: dict[str, Any], loc: SourceLoc | None = None) -> dict[str, Any]:
        """Validate attribute names and kinds, filling defaults."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ShipeiError(f"{self.name} has no attribute '{sorted(unknown)[0]}'", loc,
                              hint=f"its attributes are {', '.join(self.attrs) or 'none'}")
        out = {}
        for name, spec in self.attrs.items():
            if name in attrs:
                out[name] = coerce_attr(self.name, name, spec.kind, attrs[name], loc)
                _check_minimum(self.name, name, spec, out[name], loc)
            elif spec.required:
                raise ShipeiError(f"{self.name} needs attribute '{name}'", loc)
            else:
                out[name] = spec.default
        return out

    def infer(self, operands: list[Value], attrs: dict[str, Any]) -> list[TensorType]:
        n = len(self.operands)
        if self.variadic:
            if len(operands) < n - 1:
                raise ShipeiError(f"expects at least {n - 1} operands, got {len(operands)}")
        elif len(operands) != n:
            raise ShipeiError(f"expects {n} operands, got {len(operands)}")
        return self.type_rule([v.type for v in operands], attrs)


def _check_minimum(op: str, name: str, spec: Attr, value: Any, loc: SourceLoc | None) -> None:
    if spec.minimum is None or value is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if v < spec.minimum:
            raise ShipeiError(f"{op}: attribute '{name}' must be at least {spec.minimum}, got {v}", loc)


def coerce_attr(op: str, name: str, kind: AttrKind, value: Any, loc: SourceLoc | None) -> Any:
    """Normalize an attribute value to its canonical Python form, or raise a clear error."""

    def bad() -> ShipeiError:
        return ShipeiError(f"{op}: attribute '{name}' must be {kind.value}, got {value!r}", loc)

    if kind is AttrKind.INT:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise bad()
        return int(value)
    if kind is AttrKind.FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise bad()
        return float(value)
    if kind is AttrKind.BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise bad()
        return bool(value)
    if kind is AttrKind.STR:
        if not isinstance(value, str):
            raise bad()
        return value
    if kind is AttrKind.DTYPE:
        if isinstance(value, str):
            return DType.parse(value)
        if not isinstance(value, DType):
            raise bad()
        return value
    if kind is AttrKind.DIM:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, Sym):
            return value
        raise bad()
    if kind in (AttrKind.INTS, AttrKind.OPT_INTS, AttrKind.DIMS):
        if value is None and kind is AttrKind.OPT_INTS:
            return None
        if isinstance(value, (int, np.integer, Sym)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise bad()
        allowed = (int, np.integer, Sym) if kind is AttrKind.DIMS else (int, np.integer)
        if any(isinstance(v, bool) or not isinstance(v, allowed) for v in value):
            raise bad()
        return tuple(v if isinstance(v, Sym) else int(v) for v in value)
    if kind is AttrKind.ARRAY:
        return np.asarray(value)
    raise AssertionError(kind)


_REGISTRY: dict[str, OpDef] = {}
_GENERATION = [0]  # counts changes to the registry


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    _REGISTRY[opdef.name] = opdef
    _GENERATION[0] += 1
    return opdef


def generation() -> int:
    """A number that changes whenever an op is registered or removed: what tables derived from the
    registry (the DSL's builtins, capability tables) are cached by."""
    return _GENERATION[0]


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ShipeiError(f"unknown op '{name}'") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


def unregister(name: str) -> None:
    """Remove an op registered for a test (`shipei.testing`'s fixtures add ops and take them away)."""
    if _REGISTRY.pop(name, None) is not None:
        _GENERATION[0] += 1


def op(name: str, operands: Sequence[str], fusion: FusionKind, type_rule: TypeRule,
       reference: Reference, attrs: dict[str, Attr] | None = None,
       traits: Sequence[str] = (), doc: str = "", *, flops: FlopRule | None = None,
       workspace: WorkspaceRule | None = None, domains: dict[str, str] | None = None,
       mixes: MixRule | None = None, dsl: Spelling | None = Spelling(), samples: Sequence[Sample] = (),
       decomposition: Decomposition | None = None, indices: dict[str, int | str] | None = None) -> OpDef:
    """Declare and register an op in one call; the ops modules are lists of these."""
    return register(OpDef(name, tuple(operands), dict(attrs or {}), type_rule, reference, fusion, frozenset(traits),
                          doc, flops, workspace, dict(domains or {}), mixes, dsl, tuple(samples), decomposition,
                          dict(indices or {})))


__all__ = ["Attr", "AttrKind", "Decomposition", "Dim", "FlopRule", "FusionKind", "MixRule", "OpDef", "Sample",
           "Spelling", "WorkspaceRule", "all_ops", "generation", "get_op", "op", "register", "unregister"]
