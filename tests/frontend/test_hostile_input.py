"""Hostile and mistaken programs: each is a located error naming what is wrong, never a traceback,
a hang or exhausted memory. Every crash the front-end fuzzer (or a person) ever found stays here."""

from __future__ import annotations

import pytest
from shipei.frontend import elaborate_source
from shipei.frontend.limits import Limits
from shipei.ir.errors import ShipeiError


def model(body: str, items: str = "", signature: str = "x: f32[B, 4]", returns: str = "f32[B, 4]") -> str:
    """A model whose forward is `body` (line 3 onwards when `items` is empty)."""
    return f"model M() {{\n{items}\n    forward({signature}) -> {returns} {{\n{body}\n    }}\n}}\n"


def located(source: str, bounds: Limits | None = None) -> ShipeiError:
    with pytest.raises(ShipeiError) as info:
        elaborate_source(source, "m.sp", bounds=bounds)
    assert info.value.loc is not None and info.value.loc.file == "m.sp", str(info.value)
    return info.value


# (id, source, line, col, message)
CASES = [
    ("deep-calls", model("        return " + "relu(" * 500 + "x" + ")" * 500), 4, None, "nested too deeply"),
    ("deep-minus", model("        return " + "-" * 800 + "x"), 4, None, "nested too deeply"),
    ("deep-list", model("        n = " + "[" * 300 + "1" + "]" * 300 + "\n        return x"), 4, None,
     "nested too deeply"),
    ("huge-power", model("        return x * (10 ** 10 ** 10)"), 4, 24, "past the 64-bit range"),
    ("int-power", model("        n = 3 ** 4294967296\n        return x"), 4, 15, "past the 64-bit range"),
    ("float-overflow", model("        n = 10.0 ** 1000\n        return x"), 4, 18, "overflows a float"),
    ("float-constant-overflow", model("        return x * 1e40"), 4, 18, "the number 1e+40 is out of range for f32"),
    ("int-constant-overflow", model("        return x + 10000000000", signature="x: i32[4]", returns="i32[4]"), 4, 18,
     "the number 10000000000 is out of range for i32"),
    ("complex", model("        n = (0 - 8) ** 0.5\n        return x"), 4, 21, "is not a real number"),
    ("huge-range", "model M() {\n    for i in range(10 ** 13) { }\n    forward(x: f32[4]) -> f32[4] { return x }\n}",
     2, 19, "range() of 10,000,000,000,000 items"),
    ("zero-step", model("        for i in range(0, 4, 0) { }\n        return x"), 4, 23, "step must not be zero"),
    ("negative-linear", model("        return fc(x)", "    fc = Linear(4, 0 - 3)"), 2, 16,
     "dim -3 of f32[-3, 4] is negative"),
    ("huge-dim", model("        return x", "    param w: f32[4294967296] = zeros()"), 2, 14, "is too large"),
    ("negative-input-dim", model("        return x", signature="x: f32[B, 4 - 9]"), 3, 16, "is negative"),
    ("zero-stride", model("        return c(x)", "    c = Conv2d(4, 4, 1, stride=0)",
                          signature="x: f32[B, 4, 8, 8]", returns="f32[B, 4, 8, 8]"), 4, 17,
     "'stride' must be at least 1, got 0"),
    ("float-axis", model("        return softmax(x, axis=1.5)"), 4, 23, "attribute 'axis' must be int"),
    ("string-axis", model("        a, b = split(x, 2, axis=\"1\")\n        return a"), 4, 21, "an axis must be an int"),
    ("tensor-axis", model("        return flatten(x, start_dim=x)"), 4, 23, "an axis must be an int"),
    ("list-index-of-layers", model("        return h[[0]](x)", "    h[0] = Linear(4, 4)"), 4, 17,
     "h has no layer [0]"),
    ("float-index-of-layers", model("        return h[0.0](x)", "    h[0] = Linear(4, 4)"), 4, 17,
     "h has no layer 0.0"),
    ("layer-twice", model("        return fc(x)", "    fc = Linear(4, 4)\n    fc = Linear(4, 4)"), 3, 5,
     "'fc' is already declared in this layer"),
    ("list-item-twice", model("        return x", "    h[0] = Linear(4, 4)\n    h[0] = Linear(4, 4)"), 3, 6,
     "h[0] is already declared"),
    ("input-named-like-a-param", model("        return x", "    param x: f32[4] = zeros()"), 3, 13,
     "input 'x' has the name of one of the model's params"),
    ("argument-twice", model("        return x", signature="x: f32[4], x: f32[4]"), 3, 24, "declared twice"),
    ("dunder-layer", model("        return x", "    __class__ = Linear(4, 4)"), 2, 5, "'__class__' is reserved"),
    ("dunder-param", model("        return x", "    param __dict__: f32[4] = zeros()"), 2, 11,
     "'__dict__' is reserved"),
    ("dunder-input", model("        return __init__", signature="__init__: f32[4]"), 3, 13, "'__init__' is reserved"),
    ("dunder-escaped", model("        return x", "    `__call__` = Linear(4, 4)"), 2, 5, "'__call__' is reserved"),
    ("no-model", "layer L() { forward(x: f32[4]) -> f32[4] { return x } }", 1, 1, "no model is defined"),
    ("recursive-layer", "layer L(n: int) {\n    inner = L(n + 1)\n    forward(x: f32[4]) -> f32[4] { return x }\n}\n"
     "model M() {\n    l = L(0)\n    forward(x: f32[4]) -> f32[4] { return l(x) }\n}", 2, 15, "nested too deeply"),
    ("squared-dim", model("        d = B\n        for i in range(40) { d = d * d }\n        return x"), 5, 36,
     "symbolic dim too large"),
]


@pytest.mark.parametrize("source, line, col, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_hostile_program_is_a_located_error(source: str, line: int, col: int | None, message: str) -> None:
    err = located(source)
    assert message in err.message, str(err)
    assert err.loc.line == line and (col is None or err.loc.col == col), str(err)


def test_an_error_inside_a_prelude_layer_points_at_the_users_line_with_the_prelude_as_a_note() -> None:
    err = located("model M(hidden: int = 0 - 5) {\n    fc = Linear(4, hidden)\n"
                  "    forward(x: f32[B, 4]) -> f32[B, 4] { return x }\n}")
    assert (err.loc.line, err.loc.col) == (2, 16) and "dim -5 of f32[-5, 4] is negative" in err.message
    (note, where), = err.notes
    assert note == "inside the prelude's Linear" and where.file == "<prelude>/nn.sp"
    assert "param weight" in where.text and str(err).count("^") == 2


def test_limits_can_be_raised() -> None:
    source = model("        for i in range(200) { x = x + 1.0 }\n        return x")
    err = located(source, Limits(loop=100))
    assert "range() of 200 items is past the limit of 100" in err.message and err.hint.startswith("raise it")
    assert len(elaborate_source(source, "m.sp", bounds=Limits(loop=200)).nodes) == 400
    blocks = ("    for i in range(50) { h[i] = Linear(4, 4) }", "        return x")
    err = located(model(blocks[1], blocks[0]), Limits(size=60))
    assert "the model grew past 60 ops, params and layers" in err.message
    assert len(elaborate_source(model(blocks[1], blocks[0]), "m.sp", bounds=Limits(size=200)).params) == 100


def test_nested_loops_count_against_one_budget() -> None:
    source = model("        for i in range(1000) { for j in range(1000) { } }\n        return x")
    err = located(source)
    assert "static loops ran past 100,000 iterations in all" in err.message and err.loc.line == 4


def test_long_flat_chains_are_not_deep() -> None:
    g = elaborate_source(model("        return x" + " + x" * 3000), "m.sp")
    assert len(g.nodes) == 3000
    g = elaborate_source(model("        return x", signature="x: f32[B" + " + 1" * 3000 + "]",
                               returns="f32[B + 3000]"), "m.sp")
    assert str(g.inputs[0].type) == "f32[B + 3000]"


@pytest.mark.parametrize("name", ["layer", "model", "param", "buffer", "on"])
def test_the_dsls_own_words_name_layers_and_params(name: str) -> None:
    """BERT's state_dict keys are encoder.layer.0...., Llama's model.layers.0...."""
    source = (f"model M() {{\n    {name}[0] = Linear(4, 4)\n    param {name}_w: f32[4] = ones()\n"
              f"    forward(x: f32[B, 4]) -> f32[B, 4] {{ return {name}[0](x) * {name}_w }}\n}}")
    g = elaborate_source(source, "m.sp")
    assert [p.name for p in g.params] == [f"{name}.0.weight", f"{name}.0.bias", f"{name}_w"]


def test_backticks_make_any_word_a_name() -> None:
    source = ("model M() {\n    `for` = Linear(4, 4)\n    param `true`: f32[4] = ones()\n"
              "    forward(`if`: f32[B, 4]) -> f32[B, 4] { return `for`(`if`) + `true` }\n}")
    g = elaborate_source(source, "m.sp")
    assert [p.name for p in g.params] == ["for.weight", "for.bias", "true"] and g.inputs[0].name == "if"


def test_a_python_keyword_without_backticks_says_how_to_use_it() -> None:
    err = located("model M() {\n    for = Linear(4, 4)\n    forward(x: f32[4]) -> f32[4] { return x }\n}")
    assert err.message == "'for' is a reserved word and cannot be used as a name", str(err)
    assert err.hint == "write `for` in backticks to use it as a name" and (err.loc.line, err.loc.col) == (2, 5)
