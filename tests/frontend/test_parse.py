"""The DSL parser: AST shapes and positions, operator precedence, the newline rule, speed."""

import logging

import pytest
from shipei.frontend import ast
from shipei.frontend.parse import _parser, parse_file, parse_source

SAMPLE = """\
# examples/mlp.sp
import "blocks.sp"          # import of another .sp file

model MLP(hidden: int = 256, classes: int = 10) {
    fc1 = Linear(784, hidden)
    fc2 = Linear(hidden, classes)

    forward(x: f32[B, 784]) -> f32[B, classes] {
        h = relu(fc1(x))
        return softmax(fc2(h), axis=-1)
    }
}

layer Linear(in_features: int, out_features: int, bias: bool = true) {
    param weight: f32[out_features, in_features] = kaiming_uniform(fan_in=in_features)
    if bias {
        param bias: f32[out_features] = uniform(-1.0 / in_features ** 0.5, 1.0 / in_features ** 0.5)
    }
    buffer running_mean: f32[out_features] = zeros()
    forward(x: f32[..., in_features]) -> f32[..., out_features] {
        y = x @ weight.T
        if bias { y = y + bias }
        return y
    }
}

layer Stack(n: int, d: int) {
    for i in range(n) {
        blocks[i] = Block(d)
    }
    forward(x: f32[B, T, d]) -> f32[B, T, d] {
        for i in range(n) { x = blocks[i](x) }
        on gpu { y = x * 2.0 }
        @on(npu) z = y + 1
        a, b = split(z, 2, axis=-1)
        q = z[:, 0:4, ::2]
        s = z.shape[0]
        t = (a, b)
        c = a < b and not (b >= a) or true
        w = -a ** 2 + a // 2 % 3 - a / 4.5e-1
        return a + b, c
    }
}
"""


def show(e) -> str:
    """An expression, fully parenthesized, so a test can state the tree in one line."""
    match e:
        case ast.Name(id):
            return id
        case ast.Int(v) | ast.Float(v):
            return repr(v)
        case ast.Bool(v):
            return "true" if v else "false"
        case ast.Str(v):
            return repr(v)
        case ast.BinOp(op, l, r) | ast.Compare(op, l, r) | ast.BoolOp(op, l, r):
            return f"({show(l)} {op} {show(r)})"
        case ast.UnaryOp(op, x):
            return f"({op}{show(x)})"
        case ast.Not(x):
            return f"(not {show(x)})"
        case ast.Call(f, args, kwargs):
            parts = [show(a) for a in args] + [f"{k.name}={show(k.value)}" for k in kwargs]
            return f"{show(f)}({', '.join(parts)})"
        case ast.Attribute(v, name):
            return f"{show(v)}.{name}"
        case ast.Index(v, items):
            return f"{show(v)}[{', '.join(show(i) for i in items)}]"
        case ast.Slice(a, b, c):
            return ":".join("" if x is None else show(x) for x in (a, b, c))
        case ast.EllipsisLit():
            return "..."
        case ast.TupleExpr(elts):
            return f"({', '.join(show(x) for x in elts)}{',' if len(elts) == 1 else ''})"
        case ast.ListExpr(elts):
            return f"[{', '.join(show(x) for x in elts)}]"
    raise AssertionError(f"not an expression: {e!r}")


def forward_body(stmts: str) -> tuple:
    src = f"model M() {{\n  forward(x: f32[B]) -> f32[B] {{\n{stmts}\n  }}\n}}\n"
    return parse_source(src).items[0].body[0].body


def expr(text: str) -> str:
    (ret,) = forward_body(f"return {text}")
    return show(ret.values[0])


@pytest.fixture(scope="module")
def sample() -> ast.Module:
    return parse_source(SAMPLE, "mlp.sp")


def test_sample_top_level(sample):
    imp, mlp, linear, stack = sample.items
    assert sample.file == "mlp.sp"
    assert imp == ast.Import("blocks.sp", imp.loc)
    assert (imp.loc.line, imp.loc.col) == (2, 8)
    assert [(d.kind, d.name) for d in (mlp, linear, stack)] == [
        ("model", "MLP"), ("layer", "Linear"), ("layer", "Stack")]
    assert [(c.name, c.type_name, c.default and show(c.default)) for c in linear.cparams] == [
        ("in_features", "int", None), ("out_features", "int", None), ("bias", "bool", "true")]
    assert (mlp.loc.line, mlp.loc.col, mlp.loc.file) == (4, 7, "mlp.sp")
    assert mlp.loc.text == "model MLP(hidden: int = 256, classes: int = 10) {"


def test_sample_model(sample):
    fc1, fc2, fwd = sample.items[1].body
    assert [t.id for t in fc1.targets] == ["fc1"] and show(fc1.value) == "Linear(784, hidden)"
    assert (fc1.loc.line, fc1.loc.col) == (5, 9)  # the '='
    assert (fc1.value.loc.line, fc1.value.loc.col) == (5, 17)  # the call's '('
    assert isinstance(fwd, ast.Method) and fwd.name == "forward"
    (arg,) = fwd.args
    assert arg.name == "x" and arg.type.dtype == "f32"
    assert [show(d) for d in arg.type.dims] == ["B", "784"]
    assert [[show(d) for d in r.dims] for r in fwd.returns] == [["B", "classes"]]
    h, ret = fwd.body
    assert show(h.value) == "relu(fc1(x))"
    assert [show(v) for v in ret.values] == ["softmax(fc2(h), axis=(-1))"]
    kw = ret.values[0].kwargs[0]
    assert (kw.loc.line, kw.loc.col) == (10, 32)


def test_sample_layer(sample):
    weight, if_bias, running_mean, fwd = sample.items[2].body
    assert (weight.kind, weight.name, weight.loc.col) == ("param", "weight", 11)
    assert show(weight.init) == "kaiming_uniform(fan_in=in_features)"
    assert isinstance(if_bias, ast.If) and show(if_bias.cond) == "bias" and if_bias.orelse == ()
    (bias,) = if_bias.then
    assert show(bias.init.args[0]) == "((-1.0) / (in_features ** 0.5))"
    assert (running_mean.kind, show(running_mean.init)) == ("buffer", "zeros()")
    assert isinstance(fwd.args[0].type.dims[0], ast.EllipsisLit)
    y, if_, ret = fwd.body
    assert show(y.value) == "(x @ weight.T)"
    assert show(if_.then[0].value) == "(y + bias)"


def test_sample_stack(sample):
    loop, fwd = sample.items[3].body
    assert (loop.var, show(loop.iter)) == ("i", "range(n)")
    (sub,) = loop.body
    assert [show(t) for t in sub.targets] == ["blocks[i]"] and show(sub.value) == "Block(d)"
    for_, on, annotated, unpack, q, s, t, c, w, ret = fwd.body
    assert show(for_.body[0].value) == "blocks[i](x)"
    assert (str(on.placement), show(on.body[0].value)) == ("cuda", "(x * 2.0)")
    assert (on.loc.line, on.loc.col) == (33, 9)
    assert str(annotated.placement) == "ascend" and [x.id for x in annotated.body[0].targets] == ["z"]
    assert (annotated.loc.line, annotated.loc.col) == (34, 9)
    assert [x.id for x in unpack.targets] == ["a", "b"]
    assert show(q.value) == "z[::, 0:4:, ::2]"
    assert [(i.loc.line, i.loc.col) for i in q.value.items] == [(36, 15), (36, 19), (36, 23)]
    assert show(s.value) == "z.shape[0]"
    assert (s.value.value.loc.line, s.value.value.loc.col) == (37, 15)  # the attribute's name
    assert show(t.value) == "(a, b)"
    assert show(c.value) == "(((a < b) and (not (b >= a))) or true)"
    assert show(w.value) == "(((-(a ** 2)) + ((a // 2) % 3)) - (a / 0.45))"
    assert [show(v) for v in ret.values] == ["(a + b)", "c"]
    assert (ret.loc.line, ret.loc.col) == (41, 9)


@pytest.mark.parametrize("text, tree", [
    ("-a ** 2", "(-(a ** 2))"),
    ("a ** -b", "(a ** (-b))"),
    ("2 ** 3 ** 2", "(2 ** (3 ** 2))"),
    ("a + b * c @ d", "(a + ((b * c) @ d))"),
    ("a - b - c", "((a - b) - c)"),
    ("a / b // c % d", "(((a / b) // c) % d)"),
    ("a < b and c", "((a < b) and c)"),
    ("a or b and c", "(a or (b and c))"),
    ("not a == b", "(not (a == b))"),
    ("not not a", "(not (not a))"),
    ("a + b != c * d", "((a + b) != (c * d))"),
    ("-(-a)", "(-(-a))"),
    ("+a * -b", "((+a) * (-b))"),
    ("(a + b) * c", "((a + b) * c)"),
    ("a.b(c)[0].d", "a.b(c)[0].d"),
    ("-x.shape[0] ** 2", "(-(x.shape[0] ** 2))"),
    ("f(a, b=1, c=x + 1,)", "f(a, b=1, c=(x + 1))"),
    ("z[..., -1]", "z[..., (-1)]"),
])
def test_precedence(text, tree):
    assert expr(text) == tree


@pytest.mark.parametrize("text, value", [
    ("1.0", 1.0), (".5", 0.5), ("1e-5", 1e-5), ("4.5e-1", 0.45), ("2.", 2.0), ("1E3", 1000.0),
])
def test_float_literals(text, value):
    (ret,) = forward_body(f"return {text}")
    assert isinstance(ret.values[0], ast.Float) and ret.values[0].value == value


def test_literals_and_collections():
    (ret,) = forward_body(r"return 7, true, false, 'a\tb\"', (), (a,), (a, b,), [], [a, b]")
    assert [show(v) for v in ret.values] == [
        "7", "true", "false", repr('a\tb"'), "()", "(a,)", "(a, b)", "[]", "[a, b]"]


def test_slices():
    (ret,) = forward_body("return z[1:], z[:3], z[:], z[::-1], z[a:b:c], z[0]")
    assert [show(v) for v in ret.values] == [
        "z[1::]", "z[:3:]", "z[::]", "z[::(-1)]", "z[a:b:c]", "z[0]"]


def test_tensor_types():
    m = parse_source("""
        layer L(d: int) {
            param m: bool[B * T, d // 2, (d + 1) * 2] = ones()
            buffer s: f32[] = zeros()
            loss(x: bf16[B], y: i64[B],) -> (f32[], f32[B]) { return x, y }
            two(x: f16[B]) -> f64[B], i32[B] { return x, x }
        }""")
    mask, scalar, loss, two = m.items[0].body
    assert mask.type.dtype == "bool"
    assert [show(d) for d in mask.type.dims] == ["(B * T)", "(d // 2)", "((d + 1) * 2)"]
    assert scalar.type.dims == ()
    assert loss.name == "loss" and [a.type.dtype for a in loss.args] == ["bf16", "i64"]
    assert [(r.dtype, len(r.dims)) for r in loss.returns] == [("f32", 0), ("f32", 1)]
    assert [r.dtype for r in two.returns] == ["f64", "i32"]


def test_if_else_chains():
    (stmt,) = forward_body("if a { y = 1 } else if b { y = 2 } else { y = 3 }")
    assert show(stmt.cond) == "a"
    (elif_,) = stmt.orelse
    assert isinstance(elif_, ast.If) and show(elif_.cond) == "b"
    assert show(elif_.orelse[0].value) == "3"
    m = parse_source("layer L(b: bool) { if b { x = 1 } else { x = 2; y = 3 } }")
    (item,) = m.items[0].body
    assert [t.targets[0].id for t in item.orelse] == ["x", "y"]


def test_newline_before_bracket_starts_a_statement():
    a, b = forward_body("    a = b\n    (c, d) = e(f)")
    assert show(a.value) == "b"
    assert [t.id for t in b.targets] == ["c", "d"] and show(b.value) == "e(f)"
    (call,) = forward_body("    y = f(\n      x,\n      y\n    )[\n0]")
    assert show(call.value) == "f(x, y)[0]"


def test_operators_continue_across_lines():
    (stmt,) = forward_body("    y = a\n      - b +\n      c")
    assert show(stmt.value) == "((a - b) + c)"


def test_statements_need_no_separator():
    stmts = forward_body("y = a; z = b;; print(y) w = f(z) return w")
    assert [type(s).__name__ for s in stmts] == ["Assign", "Assign", "ExprStmt", "Assign", "Return"]
    assert show(stmts[2].value) == "print(y)"


def test_keywords_are_not_names_but_prefixes_are():
    (stmt,) = forward_body("inner, format, only, true_ = iffy(one, nothing)")
    assert [t.id for t in stmt.targets] == ["inner", "format", "only", "true_"]
    assert expr("a @onion") == "(a @ onion)"


def test_comments_and_empty_module():
    assert parse_source("").items == ()
    assert parse_source("# nothing\n  ;  # here\n").items == ()
    assert parse_source("layer L() { } # end").items[0].body == ()


def test_crlf_locations():
    m = parse_source("layer L() {\r\n  x = 1\r\n}\r\n", "w.sp")
    (assign,) = m.items[0].body
    assert (assign.loc.line, assign.loc.col, assign.loc.text) == (2, 5, "  x = 1")


def test_parse_file(tmp_path):
    path = tmp_path / "m.sp"
    path.write_text("layer L() { }\n", encoding="utf-8")
    m = parse_file(path)
    assert m.file == str(path) and m.items[0].loc.file == str(path)


def test_nodes_are_immutable_and_hashable(sample):
    with pytest.raises(AttributeError):
        sample.items[1].name = "X"
    assert hash(sample) == hash(parse_source(SAMPLE, "mlp.sp"))


def test_grammar_has_no_lalr_conflicts(caplog):
    """Lark resolves shift/reduce conflicts silently (as shift); it only logs them."""
    caplog.set_level(logging.DEBUG, logger="lark")
    _parser.cache_clear()
    _parser()
    assert "conflict" not in caplog.text.lower()
