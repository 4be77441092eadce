"""The textual IR: golden printed text, exact round trips for every op and for random graphs,
and parser errors at exact locations."""

from __future__ import annotations

import numpy as np
import pytest
from graphs import B, T, assert_graphs_equal, mlp, sample_graphs, t
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from shipei.ir.errors import ShipeiError, SourceLoc
from shipei.ir.graph import Builder, Graph, Init
from shipei.ir.parser import parse_ir
from shipei.ir.placement import DEVICE_KINDS, TARGETS, Placement
from shipei.ir.printer import print_graph
from shipei.ir.registry import all_ops
from shipei.ir.types import DType, Sym, dim_add, dim_mul
from shipei.ir.verifier import verify


def assert_round_trips(graph: Graph) -> None:
    """parse(print(g)) equals g, and printing it again gives the same text."""
    text = print_graph(graph, locs=True)
    parsed = parse_ir(text)
    verify(parsed)
    assert print_graph(parsed, locs=True) == text
    assert_graphs_equal(parsed, graph)


# ---- golden text ----

MLP_TEXT = """\
graph @MLP(%x: f32[B, 784], %fc1.weight: param f32[256, 784] = kaiming_uniform(fan_in=784), \
%fc1.bias: param f32[256] = zeros(), %fc2.weight: param f32[10, 256] = uniform(low=-0.0625, high=0.0625), \
%scale: buffer f32[10] = full(value=1.0)) -> (f32[B, 10]) {
  %0 = transpose(%fc1.weight) {perm = [1, 0]} : f32[784, 256]
  %1 = matmul(%x, %0) : f32[B, 256]
  %2 = add(%1, %fc1.bias) : f32[B, 256]
  %3 = relu(%2) : f32[B, 256]
  %4 = dropout(%3) {p = 0.25} : f32[B, 256]
  %5 = transpose(%fc2.weight) {perm = [1, 0]} : f32[256, 10]
  %6 = matmul(%4, %5) : f32[B, 10]
  %7 = mul(%6, %scale) : f32[B, 10]
  %8 = softmax(%7) {axis = -1} : f32[B, 10]
  return %8
}
"""


def literals() -> Graph:
    """Multiple results, symbolic attributes, array constants, a device and source locations."""
    g = Graph("Literals")
    b = Builder(g)
    x = b.input("x", t("f32", B, 6))
    b.loc, b.placement = SourceLoc("models/lit.sp", 3, 9), Placement.parse("gpu")
    _, hi = b.op("split", x, sizes=(2, 4), axis=1)
    b.loc, b.placement = None, None
    n = b("iota", length=dim_add(dim_mul(2, B), -1))
    c = b("constant", value=np.array([[1.0, -2.5], [np.inf, np.nan]]), dtype=DType.f32)
    s = b("constant", value=np.array(True), dtype=DType.bool)
    b.loc = SourceLoc('we"ird.sp', 12, 1)
    e = b("constant", value=np.zeros((0, 3), np.int64), dtype=DType.i64)
    g.outputs = [hi, n, c, s, e]
    return g


LITERALS_TEXT = """\
graph @Literals(%x: f32[B, 6]) -> (f32[B, 4], i64[2*B - 1], f32[2, 2], bool[], i64[0, 3]) {
  %0, %1 = split(%x) {sizes = [2, 4], axis = 1} : f32[B, 2], f32[B, 4] on cuda
  %2 = iota() {length = 2*B - 1, dtype = i64} : i64[2*B - 1]
  %3 = constant() {value = array<[[1.0, -2.5], [inf, nan]]>, dtype = f32} : f32[2, 2]
  %4 = constant() {value = array<true>, dtype = bool} : bool[]
  %5 = constant() {value = array<[] : [0, 3]>, dtype = i64} : i64[0, 3]
  return %1, %2, %3, %4, %5
}
"""

LITERALS_LOCS = LITERALS_TEXT.replace(" on cuda\n", ' on cuda loc("models/lit.sp":3:9)\n').replace(
    "i64} : i64[0, 3]\n", 'i64} : i64[0, 3] loc("we\\"ird.sp":12:1)\n')


def test_golden_mlp() -> None:
    assert print_graph(mlp()) == MLP_TEXT
    assert str(mlp()) == MLP_TEXT


def test_golden_literals_with_and_without_locs() -> None:
    assert print_graph(literals()) == LITERALS_TEXT
    assert print_graph(literals(), locs=True) == LITERALS_LOCS


def test_golden_empty_graph_and_no_results() -> None:
    g = Graph("Empty")
    b = Builder(g)
    b.op("split", b.input("x", t("f32", 0)), sizes=())
    assert print_graph(g) == ("graph @Empty(%x: f32[0]) -> () {\n"
                              "  () = split(%x) {sizes = [], axis = 0} : ()\n  return\n}\n")


@pytest.mark.parametrize("graph", [mlp(), literals()], ids=["mlp", "literals"])
def test_golden_graphs_round_trip(graph: Graph) -> None:
    assert_round_trips(graph)


def test_parser_reads_hand_written_ir() -> None:
    """Named results, attributes in any order with defaults left out, and comments."""
    text = """
    // a comment
    graph @G(%x: f32[B, 4]) -> (f32[B, 2]) {
      %h = softmax(%x) : f32[B, 4]   // axis defaults to -1
      %lo, %hi = split(%h) {axis = 1, sizes = [2, 2]} : f32[B, 2], f32[B, 2]
      return %hi
    }"""
    expected = ("graph @G(%x: f32[B, 4]) -> (f32[B, 2]) {\n  %0 = softmax(%x) {axis = -1} : f32[B, 4]\n"
                "  %1, %2 = split(%0) {sizes = [2, 2], axis = 1} : f32[B, 2], f32[B, 2]\n  return %2\n}\n")
    assert print_graph(parse_ir(text)) == expected


# ---- every op round-trips ----

@pytest.mark.parametrize("op", sorted(all_ops()))
def test_every_op_round_trips(op: str) -> None:
    graphs = sample_graphs(op)
    assert graphs, f"op '{op}' has no samples: give its definition some (OpDef.samples)"
    for graph in graphs:
        assert_round_trips(graph)


@pytest.mark.parametrize("dtype", list(DType), ids=str)
def test_constants_of_every_dtype_keep_their_values(dtype: DType) -> None:
    """Values print at float64 precision, which holds f16, bf16 and f32 exactly."""
    numbers = [[0.1, -0.0, 3.0], [np.inf, 65504.0, 1e-3]] if dtype.is_float else [[1, 0, 3], [-7, 65504, 2]]
    value = np.array(numbers).astype(dtype.numpy)
    g = Graph("C")
    g.outputs = [Builder(g)("constant", value=value, dtype=dtype)]
    parsed = parse_ir(print_graph(g)).nodes[0].attrs["value"]
    assert np.array_equal(parsed.astype(dtype.numpy), value)
    assert print_graph(parse_ir(print_graph(g))) == print_graph(g)


# ---- random graphs round-trip ----

# Symbol names include words that are keywords or literals elsewhere in the text.
SYMBOLS = ["B", "T", "seq.len", "on", "loc", "return", "param", "array", "true", "none", "inf", "f32"]
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,6}", fullmatch=True)
placements = st.builds(Placement, st.sampled_from([None, *TARGETS]), st.sampled_from([None, *DEVICE_KINDS]),
                       st.none() | st.integers(0, 7)).filter(lambda p: bool(p.target or p.device)
                                                             and (p.device is not None or p.index is None))
scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats())


@st.composite
def polys(draw: st.DrawFn) -> int | Sym:
    """Integer polynomials over SYMBOLS, in canonical form by construction."""
    dim = draw(st.integers(-3, 9))
    for _ in range(draw(st.integers(0, 3))):
        term = draw(st.integers(-4, 4))
        for sym in draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3)):
            term = dim_mul(term, Sym.named(sym))
        dim = dim_add(dim, term)
    return abs(dim) if isinstance(dim, int) else dim  # a static dim is never negative


constants = st.sampled_from([np.bool_, np.int64, np.int32, np.float64, np.float32, np.float16]).flatmap(
    lambda dtype: arrays(dtype, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))
locs = st.builds(SourceLoc, st.text(max_size=8), st.integers(1, 10**6), st.integers(1, 500))


@given(data=st.data())
def test_random_graphs_round_trip(data: st.DataObject) -> None:
    arg_names = data.draw(st.lists(names, min_size=3, max_size=3, unique=True))
    g = Graph(data.draw(names))
    b = Builder(g)
    shape = tuple(data.draw(st.lists(polys(), max_size=3)))
    x = b.input(arg_names[0], t("f32", *shape))
    low, high = data.draw(scalars), data.draw(scalars)
    w = b.add_param(arg_names[1], t("f32", 2, 3), Init("uniform", (("low", low), ("high", high))))
    s = b.add_param(arg_names[2], t("i64", 0), Init("full", (("value", data.draw(scalars)),)), buffer=True)
    b.placement = data.draw(st.none() | placements)
    b.loc = data.draw(st.none() | locs)
    outputs = [b("dropout", x, p=data.draw(st.floats(0.0, 1.0))), b("reshape", x, shape=shape),
               b("gelu", x, approximate=data.draw(st.sampled_from(["none", "tanh"]))),
               b("pad", x, pads=tuple(data.draw(st.lists(st.integers(0, 2), min_size=2 * len(shape),
                                                         max_size=2 * len(shape)))), value=data.draw(st.floats())),
               b("iota", length=data.draw(polys()), dtype=data.draw(st.sampled_from([DType.i32, DType.f16]))),
               b("constant", value=data.draw(constants), dtype=data.draw(st.sampled_from(list(DType)))), w, s]
    g.outputs = outputs
    assert_round_trips(g)


# ---- size (speed is measured in benchmarks/compile_speed.py, not asserted here) ----

def test_parses_ten_thousand_nodes() -> None:
    g = Graph("Deep")
    b = Builder(g)
    h = b.input("x", t("f32", B, T, 16))
    w = b.add_param("w", t("f32", 16, 16), Init("zeros"))
    for _ in range(3_334):
        h = b("softmax", b("add", b("matmul", h, w), h), axis=-1)
    g.outputs = [h]
    text = print_graph(g)
    parsed = parse_ir(text)
    assert len(parsed.nodes) == 10_002 and print_graph(parsed) == text


# ---- errors, at exact locations ----

def body(*lines: str) -> str:
    """A graph around node lines, which start on line 2 at column 3."""
    return "graph @g(%x: f32[2], %i: i64[3]) -> () {\n" + "".join(f"  {line}\n" for line in lines) + "  return\n}\n"


ERRORS = [
    # (text, line, col, message)
    (body("%0 = relux(%x) : f32[2]"), 2, 8, "unknown op 'relux'"),
    (body("%0 = relu(%y) : f32[2]"), 2, 13, "%y is not defined"),
    (body("%0 = relu(%x) : f32[2]", "%0 = relu(%x) : f32[2]"), 3, 3, "%0 is defined twice"),
    (body("%x = relu(%x) : f32[2]"), 2, 3, "%x is defined twice"),
    (body("%0 = relu(%x) : f32[3]"), 2, 19, "result 0 of relu has type f32[2], not f32[3]"),
    (body("%0 = split(%x) {sizes = [1, 1]} : f32[1], f32[1]"), 2, 8, "split has 2 result(s) here, but 1 name(s)"),
    (body("%0, %1 = split(%x) {sizes = [1, 1]} : f32[1]"), 2, 12, "split has 2 result(s) here, but 1 type(s)"),
    (body("%0 = add(%x, %i) : f32[2]"), 2, 8, "add: operands have different dtypes"),
    (body("%0 = relu(%x, %x) : f32[2]"), 2, 8, "relu: expects 1 operands, got 2"),
    (body("%0 = softmax(%x) {dim = 0} : f32[2]"), 2, 21, "softmax has no attribute 'dim'"),
    (body("%0 = softmax(%x) {axis = 0, axis = 0} : f32[2]"), 2, 31, "attribute 'axis' is given twice"),
    (body("%0 = softmax(%x) {axis = 1.5} : f32[2]"), 2, 21, "attribute 'axis' must be int"),
    (body("%0 = cast(%x) {dtype = f33} : f32[2]"), 2, 18, "unknown dtype 'f33'"),
    (body("%0 = transpose(%x) : f32[2]"), 2, 8, "transpose needs attribute 'perm'"),
    (body("%0 = constant() {value = [1], dtype = f32} : f32[1]"), 2, 20, "must be an array"),
    (body("%0 = constant() {value = array<[[1], [2, 3]]>, dtype = f32} : f32[1]"), 2, 28, "nested lists of one shape"),
    (body("%0 = constant() {value = array<[1] : [0, 1]>, dtype = f32} : f32[1]"), 2, 28, "cannot have the written"),
    (body("%0 = constant() {value = array<[1, two]>, dtype = f32} : f32[2]"), 2, 38, "got 'two'"),
    (body("%0 = constant() {value = tensor<1>, dtype = f32} : f32[]"), 2, 28, "unknown literal 'tensor<...>'"),
    (body('%0 = gelu(%x) {approximate = "\\q"} : f32[2]'), 2, 32, "bad string literal"),
    (body("%0 = relu(%x) f32[2]"), 2, 17, "unexpected 'f32[2]', expected one of ':', '{'"),
    (body("%0 = relu(%x) : f32[2] $"), 2, 26, "unexpected character '$'"),
    (body("%0 = relu(%x) : f32[2, +]"), 2, 26, "unexpected '+'"),
    (body("%0 = relu(%x) : f32[2 B]"), 2, 25, "unexpected 'B'"),
    (body("%0 = relu(%x) : f32[2,]"), 2, 25, "unexpected ']'"),
    (body("%0 = relu(%x) : f64[2]"), 2, 19, "result 0 of relu has type f32[2], not f64[2]"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  return\n}", 2, 3, "return gives 0 values, but the signature declares 1"),
    ("graph @g(%x: f32[2]) -> (f32[3]) {\n  return %x\n}", 2, 10, "%x has type f32[2], but the signature declares"),
    ("graph @g(%w: param f32[2] = zeros(), %x: f32[2]) -> () {\n  return\n}", 1, 38, "input %x follows a param"),
    ("graph @g(%w: param f32[2]) -> () {\n  return\n}", 1, 14, "param %w needs an initializer"),
    ("graph @g(%x: f32[2] = zeros()) -> () {\n  return\n}", 1, 23, "input %x cannot have an initializer"),
    ("graph @g(%w: buffer f32[N] = zeros()) -> () {\n  return\n}", 1, 21, "buffer %w has a symbolic shape f32[N]"),
    ("graph @g(%w: param f32[2] = zero()) -> () {\n  return\n}", 1, 29, "unknown initializer 'zero'"),
    ("graph @g(%w: param f32[2] = full(val=1)) -> () {\n  return\n}", 1, 29, "has no argument 'val'"),
    ("graph @g(%w: param f32[2] = full(value=1, value=2)) -> () {\n  return\n}", 1, 43, "'value' is given twice"),
    ("graph @g(%w: param f32[2] = full(value=-x)) -> () {\n  return\n}", 1, 41, "expected a number after '-'"),
    ("graph @g(%0: f32[2]) -> () {\n  return\n}", 1, 10, "'%0' cannot name an input or param"),
    ("graph @g(%x: f32[2]) -> () {\n  return\n", 2, 9, "unexpected end of input, expected one of '}', a value"),
    ("graph g() -> () {\n  return\n}", 1, 7, "unexpected 'g', expected a graph name (@name)"),
    ("", 1, 1, "unexpected end of input, expected 'graph'"),
]


@pytest.mark.parametrize("text, line, col, message", ERRORS, ids=[e[3][:40] for e in ERRORS])
def test_parse_errors(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(ShipeiError) as info:
        parse_ir(text, "bad.ir")
    err = info.value
    assert message in err.message
    assert (err.loc.file, err.loc.line, err.loc.col) == ("bad.ir", line, col), str(err)
    assert err.loc.text == text.split("\n")[line - 1]
    assert str(err).startswith(f"bad.ir:{line}:{col}: error: ")


@given(st.sampled_from([MLP_TEXT, LITERALS_LOCS]), st.integers(0, 10**6), st.integers(0, 3),
       st.text(alphabet="%@,:=()[]{}<>-+*\"0123456789.eBTfiax \n", max_size=3))
@example(MLP_TEXT, 210591, 0, "-")  # found by CI: a negative dim in a type was an error with no location
def test_damaged_text_gives_located_errors(text: str, at: int, cut: int, insert: str) -> None:
    """Any edit of valid text parses or fails with a located ShipeiError, never a traceback."""
    at %= len(text)
    damaged = text[:at] + insert + text[at + cut:]
    try:
        parse_ir(damaged)
    except ShipeiError as err:
        assert err.loc is not None and err.loc.line >= 1 and err.loc.col >= 1


def test_unknown_op_suggests_a_close_name() -> None:
    with pytest.raises(ShipeiError) as info:
        parse_ir(body("%0 = relux(%x) : f32[2]"))
    assert info.value.hint == "did you mean 'relu'?"
    assert str(info.value).endswith("      %0 = relux(%x) : f32[2]\n           ^\nhint: did you mean 'relu'?")
