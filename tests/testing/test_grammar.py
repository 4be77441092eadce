"""The DSL parser never crashes on text the grammar generates (or mangles): only ShipeiError."""

from __future__ import annotations

from importlib import resources

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark
from shipei.frontend import elaborate_source
from shipei.frontend.parse import parse_source
from shipei.ir.errors import ShipeiError

GRAMMAR = Lark(resources.files("shipei.grammars").joinpath("shipei.lark").read_text("utf-8"), parser="lalr",
               lexer="basic")
# The postlexer's bracket tokens have no pattern in the grammar; they are spelled as brackets.
SOURCES = from_lark(GRAMMAR, explicit={"CALL_LPAR": st.just("("), "INDEX_LSQB": st.just("[")})


def parses_or_reports(text: str) -> None:
    try:
        parse_source(text, "gen.sp")
    except ShipeiError as err:
        assert err.loc is None or err.loc.line >= 1


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(SOURCES)
def test_grammar_generated_text_parses_or_is_a_located_error(text):
    parses_or_reports(text)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(SOURCES, st.integers(0, 10**6), st.sampled_from(["", "(", "]", "{", "}", ",", "=", "\n", "@", "..."]))
def test_mangled_grammar_text_parses_or_is_a_located_error(text, at, junk):
    at %= len(text) + 1
    parses_or_reports(text[:at] + junk + text[at + 1:])


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(SOURCES)
@example('import "a\x00b"\nmodel M() { forward(x: f32[1]) -> f32[1] { return x } }')
def test_grammar_generated_programs_elaborate_or_report_a_shipei_error(text):
    try:
        elaborate_source(text, "gen.sp")
    except ShipeiError:
        pass
