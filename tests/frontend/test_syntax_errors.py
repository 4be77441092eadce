"""Syntax diagnostics: exact positions, messages in the user's terms, and never a traceback."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shipei.frontend.parse import parse_file, parse_source
from shipei.ir.errors import ShipeiError


def in_forward(stmts: str) -> str:
    """Statements placed in a method body: the first one is on line 3, at the column written."""
    return f"model M() {{\n  forward(x: f32[B]) -> f32[B] {{\n{stmts}\n  }}\n}}\n"


# (source, line, col, fragment of the message, fragment of the hint or None)
BAD = [
    pytest.param("model M() {\n  forward(x: f32[B]) {\n    return x\n  }\n}", 2, 22,
                 "missing return type: expected '->'", "forward(x: f32[B, 4]) -> f32[B, 4]",
                 id="missing-arrow"),
    pytest.param(in_forward("    if a = b { }"), 3, 10, "use '==' to compare", None,
                 id="assign-in-condition"),
    pytest.param("model M() {\n  forward(x: f32[B]) -> f32[B] {\n    return x\n", 3, 13,
                 "unexpected end of file; expected '}'", "'{' at line 2, column 32 is not closed",
                 id="missing-brace"),
    pytest.param("model M() {\n  forward(x: f32[B]) -> f32[B] {\n    y = f(x\n", 3, 12,
                 "unexpected end of file; expected ')'", "'(' at line 3, column 10 is not closed",
                 id="eof-in-call"),
    pytest.param("layer L() { x = (1, 2 }", 1, 23, "expected ')' or ',' but found '}'",
                 "'(' at line 1, column 17 is not closed", id="mismatched-bracket"),
    pytest.param('import "blocks.sp\nlayer L() {}', 1, 8, "unterminated string", 'close it with "',
                 id="unterminated-string"),
    pytest.param(in_forward("    y = x $ 2"), 3, 11, "invalid character '$'", None,
                 id="invalid-character"),
    pytest.param(in_forward("    return softmax(fc2(h) axis=-1)"), 3, 27,
                 "expected ')' or ',' but found 'axis'", None, id="missing-comma"),
    pytest.param(in_forward("    h = relu(fc1(x)\n    return h"), 4, 5,
                 "expected ')' or ',' but found 'return'", "'(' at line 3, column 13", id="unclosed-call"),
    pytest.param("layer L(in: int) { }", 1, 9, "'in' is a reserved word", None,
                 id="keyword-as-name"),
    pytest.param("layer L() { param w: f33[4] = zeros() }", 1, 22, "unknown dtype 'f33'",
                 "f16, bf16, f32", id="unknown-dtype"),
    pytest.param("layer L() { param w: f32[4, ...] = zeros() }", 1, 29,
                 "'...' can only be the first dim", None, id="ellipsis-not-first"),
    pytest.param("layer L() { param w: f32[d / 2] = zeros() }", 1, 28,
                 "a dim must be an integer, a name", "'//' divides dims", id="float-division-dim"),
    pytest.param("layer L() { param w: f32[n, f(n)] = zeros() }", 1, 30,
                 "a dim must be an integer, a name", None, id="call-in-dim"),
    pytest.param(in_forward("    return f(axis=1, x)"), 3, 22,
                 "positional argument follows keyword argument", None, id="positional-after-kw"),
    pytest.param(in_forward("    x.y = 3"), 3, 7, "cannot assign to this expression", None,
                 id="assign-to-attribute"),
    pytest.param(in_forward("    (a,) = f(x)"), 3, 5, "cannot assign to this expression", None,
                 id="one-element-tuple-target"),
    pytest.param(in_forward("    y = f\n    (x)"), 4, 6, "only a call can stand alone",
                 "a '(' or '[' that starts a line begins a new statement", id="newline-before-call"),
    pytest.param("layer L\n(n: int) { }", 2, 1, "'(' must be on the same line",
                 None, id="newline-before-header-paren"),
    pytest.param("layer L() { param w: f32[4] }", 1, 29, "expected '=' but found '}'", None,
                 id="param-without-init"),
    pytest.param('import "a\\qb"', 1, 10, "unknown escape '\\q' in string", None,
                 id="unknown-escape"),
    pytest.param(in_forward("    return"), 4, 3, "expected an expression but found '}'", None,
                 id="empty-return"),
    pytest.param("}", 1, 1, "expected 'import', 'layer' or 'model' but found '}'", None,
                 id="stray-brace"),
    pytest.param(in_forward("    y = a < b < c"), 3, 15, "comparisons do not chain", "a < b and b < c",
                 id="chained-comparison"),
    pytest.param("layer L() { return x }", 1, 13, "expected '}' or a declaration but found 'return'",
                 None, id="statement-in-layer-body"),
    pytest.param(in_forward("    param w: f32[4] = zeros()"), 3, 5,
                 "expected '}' or a statement but found 'param'", None, id="param-in-method"),
    pytest.param("model M( { }", 1, 10, "expected ')' or a name but found '{'", None,
                 id="unclosed-cparams"),
    pytest.param(in_forward("    y = x[1:2:3:4]"), 3, 16, "expected ',' or ']' but found ':'", None,
                 id="slice-with-three-colons"),
    pytest.param("model", 1, 6, "unexpected end of file; expected a name", None, id="eof-after-model"),
    pytest.param("layer L() { x = " + "9" * 101 + " }", 1, 17, "integer literal past the 64-bit range", None,
                 id="huge-int"),
    pytest.param("layer L() { x = 9223372036854775808 }", 1, 17, "integer literal past the 64-bit range", None,
                 id="int-past-64-bits"),
]


@pytest.mark.parametrize("source, line, col, message, hint", BAD)
def test_bad_program(source, line, col, message, hint):
    with pytest.raises(ShipeiError) as info:
        parse_source(source, "bad.sp")
    err = info.value
    assert (err.loc.file, err.loc.line, err.loc.col) == ("bad.sp", line, col), str(err)
    assert message in err.message
    assert err.loc.text == source.split("\n")[line - 1]
    if hint is not None:
        assert hint in err.hint


def test_rendering_has_header_source_line_and_caret():
    with pytest.raises(ShipeiError) as info:
        parse_source(in_forward("    if a = b { }"), "m.sp")
    assert str(info.value).splitlines() == [
        "m.sp:3:10: error: '=' assigns; use '==' to compare",
        "        if a = b { }",
        "             ^",
    ]


def test_errors_do_not_chain_lark_exceptions():
    with pytest.raises(ShipeiError) as info:
        parse_source("layer L( { }")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unreadable_file(tmp_path):
    with pytest.raises(ShipeiError, match="cannot read"):
        parse_file(tmp_path / "missing.sp")
    bad = tmp_path / "latin1.sp"
    bad.write_bytes("// café\r\nlayer L".encode() + b"\xe9() {}\n")
    with pytest.raises(ShipeiError) as info:
        parse_file(bad)
    assert str(info.value).splitlines() == [
        f"{bad}:2:8: error: byte 0xe9 is not UTF-8 (invalid continuation byte)",
        "    layer L\ufffd() {}",
        "           ^",
        "hint: a .sp file is UTF-8 text: save it as UTF-8",
    ]
    marked = tmp_path / "bom.sp"  # as Windows editors save UTF-8: "invalid character '\ufeff'" before
    marked.write_bytes(b"\xef\xbb\xbflayer L() {\n  forward(x: f32[N]) -> f32[N] {\n    return x\n  }\n}\n")
    assert parse_file(marked).items[0].name == "L"


# ---- no input text gives anything but a ShipeiError ----

VALID = in_forward("""\
    h = relu(fc1(x)) @ w.T
    a, b = split(h[..., 0:4, ::2], 2, axis=-1)
    on gpu { y = a * 2.0 }
    @on(npu) z = -y ** 2 + b // 3 % 4
    if a < b and not (b >= a) or true { z = (z, [1, .5e-1]) } else { z = z }
    for i in range(3) { z = blocks[i](z) }
    return z, 'done'""") + """\
import "blocks.sp"
layer Linear(n: int, bias: bool = true) {
    param weight: f32[n, n * 2, (n + 1) // 2] = uniform(-1.0, 1.0)
    if bias { buffer b: bool[..., n] = zeros() } else { blocks[0] = Block(n) }
}
"""

TOKENS = ["model", "layer", "param", "buffer", "import", "for", "in", "if", "else", "return",
          "on", "@on", "and", "or", "not", "true", "false", "forward", "x", "f32", "bool", "B",
          "0", "1.5", "'s'", '"s', "(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "...", "=",
          "==", "->", "+", "-", "*", "/", "//", "%", "@", "**", "<", ">=", "!", "$", "#", "\\",
          "\n", " "]


def check(text: str) -> None:
    """Parses `text`; a failure must be a ShipeiError pointing inside the text."""
    try:
        parse_source(text, "fuzz.sp")
    except ShipeiError as err:
        lines = text.split("\n")
        assert err.loc is not None and 1 <= err.loc.line <= len(lines), str(err)
        assert err.loc.text == lines[err.loc.line - 1].rstrip("\r")
        assert 1 <= err.loc.col <= len(err.loc.text) + 1, str(err)
        assert "expected  " not in err.message and not err.message.endswith("expected ")
        assert str(err).startswith(f"fuzz.sp:{err.loc.line}:{err.loc.col}: error: ")


def test_valid_seed_parses():
    parse_source(VALID)


@given(st.text(max_size=200))
def test_random_text(text):
    check(text)


@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_random_token_soup(tokens):
    check(" ".join(tokens))


@given(st.lists(st.tuples(st.sampled_from(["delete", "insert", "duplicate"]),
                          st.integers(0, len(VALID)), st.integers(1, 12),
                          st.sampled_from(TOKENS)), min_size=1, max_size=4))
def test_mutated_valid_program(edits):
    text = VALID
    for kind, at, size, token in edits:
        at = min(at, len(text))
        if kind == "delete":
            text = text[:at] + text[at + size:]
        elif kind == "insert":
            text = text[:at] + token + text[at:]
        else:
            text = text[:at] + text[at:at + size] + text[at:]
    check(text)


def test_deep_nesting_is_an_error_or_a_tree_never_a_crash():
    check("layer L() { x = " + "(" * 5000 + "1" + ")" * 5000 + " }")
    check("layer L() { x = " + "-" * 5000 + "1 }")
    check("layer L() { param w: f32[" + " + ".join(["n"] * 5000) + "] = zeros() }")
    check("layer L() { x = " + "(" * 5000)
