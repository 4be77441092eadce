"""Elementwise ops: unary math, binary arithmetic with broadcasting, comparisons, where, cast."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ShipeiError
from ..registry import Attr, AttrKind, FusionKind, Sample, Spelling, op
from ..types import DType, TensorType
from .rules import ALL, FLOATS, NUMERIC, broadcast, check_dtype, per_element, scalar, unary

_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf(x), dtype=np.float64).astype(x.dtype)  # frompyfunc gives a float for 0-d input


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi).astype(x.dtype) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2).astype(x.dtype)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so neither branch overflows exp for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


_UNARY = {
    # name: (allowed dtypes, numpy reference)
    "neg": (NUMERIC, np.negative),
    "abs": (NUMERIC, np.abs),
    "exp": (FLOATS, np.exp),
    "log": (FLOATS, np.log),
    "sqrt": (FLOATS, np.sqrt),
    "rsqrt": (FLOATS, lambda x: 1 / np.sqrt(x)),
    "sin": (FLOATS, np.sin),
    "cos": (FLOATS, np.cos),
    "tanh": (FLOATS, np.tanh),
    "erf": (FLOATS, erf),
    "floor": (FLOATS, np.floor),
    "sigmoid": (FLOATS, _sigmoid),
    "relu": (NUMERIC, lambda x: np.maximum(x, np.zeros((), x.dtype))),
    "silu": (FLOATS, lambda x: x * _sigmoid(x)),
    "logical_not": (frozenset({DType.bool}), np.logical_not),
}

#: The input domain a unary op needs for finite results; property tests draw inputs from it.
_DOMAINS = {"log": "positive", "sqrt": "nonnegative", "rsqrt": "positive", "exp": "small"}

#: What a transcendental function costs per element, in FLOPs at the device's peak (the cost
#: model's unit): torch on one core of this machine, f32[256, 512], against its 94 GFLOP/s matmul
#: peak (an add costs 10 there, all of it memory). Other elementwise ops count one per element.
TRANSCENDENTAL = {"exp": 80, "log": 120, "tanh": 240, "erf": 130, "sigmoid": 40, "silu": 40, "sqrt": 50,
                  "rsqrt": 50, "sin": 120, "cos": 120, "gelu": 50}

#: Unary ops that are compositions of others; a target without a lowering of its own runs these.
_DECOMPOSITIONS = {"silu": lambda b, operands, attrs: [b("mul", operands[0], b("sigmoid", operands[0]))]}

for _name, (_allowed, _ref) in _UNARY.items():
    op(_name, ["x"], FusionKind.ELEMWISE, unary(_allowed), _ref,
       flops=per_element(TRANSCENDENTAL[_name]) if _name in TRANSCENDENTAL else None,
       domains={"x": _DOMAINS[_name]} if _name in _DOMAINS else None,
       dsl=Spelling(operator="-") if _name == "neg" else Spelling(), decomposition=_DECOMPOSITIONS.get(_name))

def _gelu_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    if attrs["approximate"] not in ("none", "tanh"):
        raise ShipeiError(f"gelu approximate must be 'none' or 'tanh', got {attrs['approximate']!r}")
    return unary(FLOATS)(types, attrs)


def _dropout_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    if not 0.0 <= attrs["p"] <= 1.0:
        raise ShipeiError(f"dropout p must be in [0, 1], got {attrs['p']}")
    return unary(ALL)(types, attrs)


def _gelu_decomposition(b, operands, attrs):
    """0.5 x (1 + erf(x / sqrt 2)), or with tanh(sqrt(2 / pi) (x + 0.044715 x^3)) for the erf."""
    (x,) = operands
    if attrs["approximate"] == "tanh":
        cube = b("mul", b("mul", x, x), x)
        inner = b("mul", b("add", x, b("mul", cube, scalar(b, 0.044715, x))), scalar(b, math.sqrt(2 / math.pi), x))
        curve = b("tanh", inner)
    else:
        curve = b("erf", b("div", x, scalar(b, math.sqrt(2), x)))
    return [b("mul", b("mul", x, scalar(b, 0.5, x)), b("add", curve, scalar(b, 1.0, x)))]


op("gelu", ["x"], FusionKind.ELEMWISE, _gelu_rule, _gelu, attrs={"approximate": Attr(AttrKind.STR, "none")},
   flops=per_element(TRANSCENDENTAL["gelu"]), decomposition=_gelu_decomposition,
   samples=[Sample(((2, 3, 4),)), Sample(((6,),), {"approximate": "tanh"})])
op("dropout", ["x"], FusionKind.ELEMWISE, _dropout_rule, lambda x, p: x,
   attrs={"p": Attr(AttrKind.FLOAT, 0.5)}, doc="Identity at inference; kept so training can use it.",
   samples=[Sample(((2, 3),), {"p": 0.1})])

_BINARY = {
    # name: (allowed dtypes, numpy reference, traits, DSL spelling, operand domains)
    "add": (NUMERIC, np.add, ("commutative",), Spelling(operator="+"), None),
    "sub": (NUMERIC, np.subtract, (), Spelling(operator="-"), None),
    "mul": (NUMERIC, np.multiply, ("commutative",), Spelling(operator="*"), None),
    "div": (FLOATS, np.divide, (), Spelling(operator="/"), {"rhs": "nonzero"}),
    "pow": (FLOATS, np.power, (), Spelling(function="pow", operator="**"), {"lhs": "positive"}),
    "maximum": (NUMERIC, np.maximum, ("commutative",), Spelling(), None),
    "minimum": (NUMERIC, np.minimum, ("commutative",), Spelling(), None),
}
for _name, (_allowed, _ref, _traits, _dsl, _domains) in _BINARY.items():
    op(_name, ["lhs", "rhs"], FusionKind.BROADCAST, broadcast(_allowed), _ref, traits=_traits, dsl=_dsl,
       domains=_domains)

_COMPARE = {"eq": (np.equal, "=="), "ne": (np.not_equal, "!="), "lt": (np.less, "<"), "le": (np.less_equal, "<="),
            "gt": (np.greater, ">"), "ge": (np.greater_equal, ">=")}
for _name, (_ref, _operator) in _COMPARE.items():
    op(_name, ["lhs", "rhs"], FusionKind.BROADCAST, broadcast(ALL, DType.bool), _ref,
       traits=("comparison", "commutative") if _name in ("eq", "ne") else ("comparison",),
       dsl=Spelling(operator=_operator))

for _name, _ref in {"logical_and": np.logical_and, "logical_or": np.logical_or}.items():
    op(_name, ["lhs", "rhs"], FusionKind.BROADCAST, broadcast(frozenset({DType.bool})), _ref,
       traits=("commutative",))


def _where_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    check_dtype(types[0], {DType.bool}, "condition")
    (t,) = broadcast(ALL)(types[1:], attrs)
    return broadcast(ALL, t.dtype)([types[0].with_dtype(t.dtype), t], attrs)


op("where", ["cond", "x", "y"], FusionKind.BROADCAST, _where_rule, np.where,
   samples=[Sample(((2, 3, 4), (3, 4), (2, 1, 4)), bool_operands=(0,))])


def _cast_rule(types: list[TensorType], attrs: dict) -> list[TensorType]:
    return [types[0].with_dtype(attrs["dtype"])]


op("cast", ["x"], FusionKind.ELEMWISE, _cast_rule, lambda x, dtype: x.astype(dtype.numpy),
   attrs={"dtype": Attr(AttrKind.DTYPE)},
   samples=[Sample(((3, 4),), {"dtype": DType.f64}), Sample(((3, 4),), {"dtype": DType.i32}),
            Sample(((3, 4),), {"dtype": DType.bool})])
