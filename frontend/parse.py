"""DSL source text → `ast.Module`, and the one place Lark errors become `ShipeiError`s.

The grammar (grammars/shipei.lark) is LALR(1), loaded once, and the AST is built by a
transformer that runs during the parse (Lark calls it on each reduction), so parsing is linear
and never recurses however deeply the input nests.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import replace
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr
from shipei.frontend import ast
from shipei.ir.errors import ShipeiError, SourceLoc
from shipei.ir.placement import Placement


def parse_source(text: str, file: str = "<string>") -> ast.Module:
    """Parse DSL source; `file` is only used in locations. Raises `ShipeiError` on bad input."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    token = _SOURCE.set((file, lines))
    try:
        return _parser().parse(text)
    except (UnexpectedCharacters, UnexpectedToken) as err:
        raise _syntax_error(err, text, file, lines) from None
    finally:
        _SOURCE.reset(token)


def parse_file(path: str | Path) -> ast.Module:
    """Read and parse a .sp file (UTF-8); locations name the path as given."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ShipeiError(f"cannot read {str(path)!r}: {err}") from None
    data = data.removeprefix(codecs.BOM_UTF8)  # an editor's byte order mark, not the program's text
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _encoding_error(data, err, str(path)) from None
    return parse_source(text, str(path))


def _encoding_error(data: bytes, err: UnicodeDecodeError, file: str) -> ShipeiError:
    """Where the first byte that is not UTF-8 lies: line and column count the characters before it."""
    before = data[:err.start].decode("utf-8")
    line_end = data.find(b"\n", err.start)
    line = data[data.rfind(b"\n", 0, err.start) + 1:None if line_end < 0 else line_end]
    loc = SourceLoc(file, before.count("\n") + 1, len(before) - before.rfind("\n"),
                    line.decode("utf-8", "replace").rstrip("\r"))
    return ShipeiError(f"byte 0x{data[err.start]:02x} is not UTF-8 ({err.reason})", loc,
                       hint="a .sp file is UTF-8 text: save it as UTF-8")


class _Postlexer:
    """Retypes tokens where the grammar's rules depend on more than one token.

    - A '(' or '[' on the same line right after an expression is a call or index: the grammar's
      one newline rule, which lets statements follow each other without separators in LALR(1).
    - The DSL's own words are keywords only where they begin what they name (`CONTEXTUAL`), and a
      name in backticks is that name, keyword or not.
    - Names of the form `__x__` are Python's own and refused wherever they appear.
    """

    always_accept = ()
    _ENDS_EXPR = frozenset({"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "RPAR", "RSQB"})
    _POSTFIX = {"LPAR": "CALL_LPAR", "LSQB": "INDEX_LSQB"}
    #: keyword -> the tokens that follow it where it is one (`model M`, `param w:`, `on gpu {`), and
    #: whether they are on its line. At the end of the file, a prefix of them will do, so that a
    #: truncated declaration reads as one.
    CONTEXTUAL = {"MODEL": (("NAME",), True), "LAYER": (("NAME",), True),
                  "PARAM": (("NAME", "COLON"), False), "BUFFER": (("NAME", "COLON"), False),
                  "ON": (("NAME", "LBRACE|COLON"), False)}

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        ahead: list[Token] = []
        tokens = iter(stream)
        prev = None
        while True:
            if not ahead:
                ahead.extend(itertools.islice(tokens, 3))
                if not ahead:
                    return
            tok = ahead.pop(0)
            if tok.type in self.CONTEXTUAL:
                ahead.extend(itertools.islice(tokens, 2 - len(ahead)))
                tok = self._keyword_or_name(tok, ahead)
            elif tok.type == "NAME":
                tok = _checked_name(tok)
            if (tok.type in self._POSTFIX and prev is not None
                    and prev.type in self._ENDS_EXPR and prev.end_line == tok.line):
                tok = Token.new_borrow_pos(self._POSTFIX[tok.type], tok.value, tok)
            prev = tok
            yield tok

    def _keyword_or_name(self, tok: Token, ahead: list[Token]) -> Token:
        follow, same_line = self.CONTEXTUAL[tok.type]
        seen = ahead[:len(follow)]
        if (all(t.type in kinds.split("|") for t, kinds in zip(seen, follow))
                and (not same_line or all(t.line == tok.line for t in seen))):
            return tok
        return Token.new_borrow_pos("NAME", tok.value, tok)


def is_python_name(name: str) -> bool:
    """Whether `name` has the form `__x__` that Python reserves for its own names (`__class__`)."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _checked_name(tok: Token) -> Token:
    """A NAME with its backticks removed; a Python system name (`__class__`) is an error."""
    name = tok.value.strip("`")
    if is_python_name(name):
        raise ShipeiError(f"'{name}' is reserved: names of the form __x__ are Python's own", _loc(tok),
                          hint="rename it")
    return tok if name == tok.value else Token.new_borrow_pos("NAME", name, tok)


def escape_name(name: str) -> str:
    """`name` as DSL source: in backticks where it is a keyword of the DSL."""
    return f"`{name}`" if name in keywords() else name


@functools.cache
def keywords() -> frozenset[str]:
    """The grammar's words (its alphabetic string terminals): `model`, `for`, `true`, ..."""
    return frozenset(t.pattern.value for t in _parser().terminals
                     if isinstance(t.pattern, PatternStr) and t.pattern.value.isalpha())


# The file name and source lines of the parse in progress, for building locations: the parser
# and its transformer are built once and shared, so per-parse state cannot live on them.
_SOURCE: ContextVar[tuple[str, list[str]]] = ContextVar("_SOURCE")


def _loc(tok: Token) -> SourceLoc:
    file, lines = _SOURCE.get()
    return SourceLoc(file, tok.line, tok.column, lines[tok.line - 1])


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_DIM_OPS = frozenset({"+", "-", "*", "//", "%"})


@v_args(inline=True)
class _Build(Transformer):
    """Builds `ast` nodes from grammar rules, and rejects what the grammar is too loose for."""

    def start(self, *items: ast.Import | ast.LayerDef) -> ast.Module:
        file, lines = _SOURCE.get()
        return ast.Module(items, file, SourceLoc(file, 1, 1, lines[0]))

    def import_(self, path: Token) -> ast.Import:
        return ast.Import(self.str_(path).value, _loc(path))

    def layer_def(self, kind: Token, name: Token, _lpar: Token, *rest) -> ast.LayerDef:
        *cparams, body = rest
        return ast.LayerDef(kind.value, name.value, tuple(cparams), body, _loc(name))

    def cparam(self, name: Token, type_name: Token, default: ast.Expr | None) -> ast.CParam:
        return ast.CParam(name.value, type_name.value, default, _loc(name))

    def items(self, *items: ast.Item | ast.Stmt) -> tuple:
        return items

    stmts = items

    def param_decl(self, kind: Token, name: Token, type_: ast.TensorTypeExpr, init: ast.Expr) -> ast.ParamDecl:
        return ast.ParamDecl(kind.value, name.value, type_, init, _loc(name))

    def item_assign(self, target: ast.Name | ast.Index, eq: Token, value: ast.Expr) -> ast.Assign:
        return ast.Assign((target,), value, _loc(eq))

    def method(self, name: Token, _lpar: Token, *rest) -> ast.Method:
        args = tuple(r for r in rest if isinstance(r, ast.Arg))
        for i, arg in enumerate(args):
            if any(a.name == arg.name for a in args[:i]):
                raise ShipeiError(f"argument '{arg.name}' is declared twice", arg.loc)
        returns = tuple(r for r in rest if isinstance(r, ast.TensorTypeExpr))
        return ast.Method(name.value, args, returns, rest[-1], _loc(name))

    def arg(self, name: Token, type_: ast.TensorTypeExpr) -> ast.Arg:
        return ast.Arg(name.value, type_, _loc(name))

    def tensor_type(self, dtype: Token, _lsqb: Token, *dims: ast.Expr | ast.EllipsisLit) -> ast.TensorTypeExpr:
        if dtype.value not in ast.DTYPES:
            raise ShipeiError(f"unknown dtype '{dtype}'", _loc(dtype),
                              hint=f"dtypes are {', '.join(ast.DTYPES)}")
        for i, dim in enumerate(dims):
            _check_dim(dim, first=i == 0)
        return ast.TensorTypeExpr(dtype.value, dims, _loc(dtype))

    def assign(self, *children) -> ast.Assign:
        *targets, eq, value = children
        return ast.Assign(_assign_targets(targets), value, _loc(eq))

    def expr_stmt(self, value: ast.Expr) -> ast.ExprStmt:
        if not isinstance(value, ast.Call):
            before = value.loc.text[:value.loc.col - 1].rstrip()
            opens_line = isinstance(value, (ast.TupleExpr, ast.ListExpr)) or before.endswith(("(", "["))
            raise ShipeiError(
                "this expression does nothing; only a call can stand alone as a statement",
                value.loc,
                hint="a '(' or '[' that starts a line begins a new statement; to continue the "
                     "line above, keep the bracket on that line" if opens_line else None,
            )
        return ast.ExprStmt(value, value.loc)

    def return_(self, kw: Token, *values: ast.Expr) -> ast.Return:
        return ast.Return(values, _loc(kw))

    def for_(self, kw: Token, var: Token, iter_: ast.Expr, body: tuple) -> ast.For:
        return ast.For(var.value, iter_, body, _loc(kw))

    def if_(self, kw: Token, cond: ast.Expr, then: tuple, orelse: tuple | ast.If | None) -> ast.If:
        orelse = () if orelse is None else (orelse,) if isinstance(orelse, ast.If) else orelse
        return ast.If(cond, then, orelse, _loc(kw))

    def on_block(self, kw: Token, placement: Placement, body: tuple) -> ast.On:
        return ast.On(placement, body, _loc(kw))

    def on_annot(self, at: Token, placement: Placement, stmt: ast.Stmt) -> ast.On:
        return ast.On(placement, (stmt,), _loc(at))

    def placement(self, first: Token, *rest: Token) -> Placement:
        """`gpu`, `jax`, `torch:cuda:0`: an unknown word is an error where it is written."""
        return Placement.parse("".join([first.value, *(t.value for t in rest)]), _loc(first))

    def boolop(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.BoolOp:
        return ast.BoolOp(op.value, left, right, _loc(op))

    def not_(self, op: Token, operand: ast.Expr) -> ast.Not:
        return ast.Not(operand, _loc(op))

    def compare(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Compare:
        return ast.Compare(op.value, left, right, _loc(op))

    def binop(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.BinOp:
        return ast.BinOp(op.value, left, right, _loc(op))

    def unary(self, op: Token, operand: ast.Expr) -> ast.UnaryOp:
        return ast.UnaryOp(op.value, operand, _loc(op))

    def call(self, func: ast.Expr, lpar: Token, *args: ast.Expr | ast.Keyword) -> ast.Call:
        positional, kwargs = [], []
        for arg in args:
            if isinstance(arg, ast.Keyword):
                kwargs.append(arg)
            elif kwargs:
                raise ShipeiError("positional argument follows keyword argument", arg.loc)
            else:
                positional.append(arg)
        return ast.Call(func, tuple(positional), tuple(kwargs), _loc(lpar))

    def keyword(self, name: Token, value: ast.Expr) -> ast.Keyword:
        return ast.Keyword(name.value, value, _loc(name))

    def attribute(self, value: ast.Expr, name: Token) -> ast.Attribute:
        return ast.Attribute(value, name.value, _loc(name))

    def index(self, value: ast.Expr, lsqb: Token, *items: ast.Expr | ast.Slice | ast.EllipsisLit) -> ast.Index:
        return ast.Index(value, items, _loc(lsqb))

    def slice(self, start: ast.Expr | None, colon: Token, stop: ast.Expr | None, _colon2: Token | None = None,
              step: ast.Expr | None = None) -> ast.Slice:
        return ast.Slice(start, stop, step, _loc(colon))

    def ellipsis(self, tok: Token) -> ast.EllipsisLit:
        return ast.EllipsisLit(_loc(tok))

    def name(self, tok: Token) -> ast.Name:
        return ast.Name(tok.value, _loc(tok))

    def int_(self, tok: Token) -> ast.Int:
        if len(tok) > 19 or int(tok) >= 2**63:  # compile-time integers are 64-bit, as in every framework
            raise ShipeiError("integer literal past the 64-bit range", _loc(tok))
        return ast.Int(int(tok), _loc(tok))

    def float_(self, tok: Token) -> ast.Float:
        return ast.Float(float(tok), _loc(tok))

    def bool_(self, tok: Token) -> ast.Bool:
        return ast.Bool(tok.value == "true", _loc(tok))

    def str_(self, tok: Token) -> ast.Str:
        def unescape(m: re.Match) -> str:
            if m[1] not in _ESCAPES:
                where = replace(_loc(tok), col=tok.column + 1 + m.start())
                raise ShipeiError(f"unknown escape '\\{m[1]}' in string", where,
                                  hint="known escapes are \\n \\t \\\\ \\\" \\'")
            return _ESCAPES[m[1]]

        return ast.Str(re.sub(r"\\(.)", unescape, tok.value[1:-1]), _loc(tok))

    def tuple_(self, lpar: Token, *elts: ast.Expr) -> ast.TupleExpr:
        return ast.TupleExpr(elts, _loc(lpar))

    def list_(self, lsqb: Token, *elts: ast.Expr) -> ast.ListExpr:
        return ast.ListExpr(elts, _loc(lsqb))


def _check_dim(dim: ast.Expr | ast.EllipsisLit, first: bool) -> None:
    """A dim is `...` (first only), an integer, a name, or + - * // % of dims."""
    if isinstance(dim, ast.EllipsisLit):
        if not first:
            raise ShipeiError("'...' can only be the first dim", dim.loc)
        return
    todo = [dim]  # a loop, not recursion: a dim may be an arbitrarily long sum
    while todo:
        d = todo.pop()
        if isinstance(d, ast.BinOp) and d.op in _DIM_OPS:
            todo += (d.left, d.right)
        elif not isinstance(d, (ast.Int, ast.Name)):
            raise ShipeiError("a dim must be an integer, a name, or +, -, *, //, % of them",
                              d.loc, hint="'//' divides dims; '/' does not" if
                              isinstance(d, ast.BinOp) and d.op == "/" else None)


def _is_target(e: ast.Expr) -> bool:
    return isinstance(e, ast.Name) or (
        isinstance(e, ast.Index) and isinstance(e.value, ast.Name) and len(e.items) == 1
        and not isinstance(e.items[0], (ast.Slice, ast.EllipsisLit)))


def _assign_targets(targets: list[ast.Expr]) -> tuple[ast.Name | ast.Index, ...]:
    """Checks what the grammar's `postfix` targets allow; `(a, b) = v` becomes `a, b = v`."""
    if len(targets) == 1 and isinstance(targets[0], ast.TupleExpr) and len(targets[0].elts) > 1:
        targets = list(targets[0].elts)
    for t in targets:
        if not _is_target(t):
            raise ShipeiError("cannot assign to this expression", t.loc,
                              hint="assign to a name, name[index], or several names: a, b = ...")
    return tuple(targets)


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("shipei.grammars").joinpath("shipei.lark").read_text("utf-8")
    return Lark(grammar, parser="lalr", lexer="basic", postlex=_Postlexer(), transformer=_Build(),
                maybe_placeholders=True)


# ---- syntax errors ----

# How a terminal reads in a message when its pattern is not the text itself.
_WORDS = {"NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
          "$END": "end of file", "CALL_LPAR": "'('", "INDEX_LSQB": "'['", "AT_ON": "'@on'"}
_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "LPAR", "LSQB",
               "PLUS", "MINUS", "NOT"}
# (trigger, what to say, what it stands for): long alternatives said in one phrase.
_GROUPS = [
    ("RETURN", "a statement", {"RETURN", "FOR", "IF", "ON", "AT_ON"} | _EXPR_START),
    ("PARAM", "a declaration", {"PARAM", "BUFFER", "NAME", "FOR", "IF"}),
    ("INT", "an expression", _EXPR_START),
]
# Tokens that may continue almost anything already written; naming them does not help.
_COMPARISONS = {"EQEQ", "NE", "LT", "LE", "GT", "GE"}
_CONTINUATIONS = _COMPARISONS | {"PLUS", "MINUS", "STAR", "SLASH", "DSLASH", "PERCENT", "AT",
                                 "POW", "AND", "OR", "CALL_LPAR", "INDEX_LSQB", "DOT",
                                 "SEMICOLON"}
_CLOSER = {"(": "RPAR", "[": "RSQB", "{": "RBRACE"}


def _describe(terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    return f"'{_parser().get_terminal(terminal).pattern.value}'"


def _is_keyword(terminal: str) -> bool:
    if terminal in _WORDS:
        return False
    pattern = _parser().get_terminal(terminal).pattern
    return isinstance(pattern, PatternStr) and pattern.value.isalpha()


def _expected(accepts: set[str]) -> str:
    """'a', 'b' or 'c', with groups of tokens named as what they start."""
    phrases = set()
    for trigger, phrase, members in _GROUPS:
        if trigger in accepts:
            phrases.add(phrase)
            accepts = accepts - members
    if phrases or accepts - _CONTINUATIONS:
        accepts = accepts - _CONTINUATIONS
    words = sorted({_describe(t) for t in accepts} | phrases, key=lambda w: (w[0] != "'", w))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _keyword_before(text: str, tok: Token) -> Token | None:
    """The keyword right before `tok`, if the token before it is one."""
    before = None
    for t in _parser().lex(text):
        if t.start_pos >= tok.start_pos:
            break
        before = t
    return before if before is not None and _is_keyword(before.type) else None


def _unclosed(text: str, upto: int) -> Token | None:
    """The innermost bracket opened before `upto` and not closed there."""
    stack = []
    for tok in _parser().lex(text):
        if tok.start_pos >= upto:
            break
        if tok.value in _CLOSER:
            stack.append(tok)
        elif tok.value in (")", "]", "}") and stack:
            stack.pop()
    return stack[-1] if stack else None


def _syntax_error(err: UnexpectedCharacters | UnexpectedToken, text: str, file: str,
                  lines: list[str]) -> ShipeiError:
    """A message in the user's terms, with labels for the common mistakes."""

    def at(line: int, col: int) -> SourceLoc:
        return SourceLoc(file, line, col, lines[line - 1])

    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream]
        if char in "\"'":
            return ShipeiError("unterminated string", at(err.line, err.column),
                               hint=f"close it with {char} on the same line")
        return ShipeiError(f"invalid character {char!r}", at(err.line, err.column))

    tok = err.token
    accepts = set(err.accepts) - {"$END"}
    if tok.type == "$END":
        closers = accepts & set(_CLOSER.values())
        loc = at(tok.end_line, tok.end_column)
        message = f"unexpected end of file; expected {_expected(closers or accepts)}"
    else:
        loc = at(tok.line, tok.column)
        found = tok.value if tok.type == "STRING" else f"'{tok.value}'"
        message = f"expected {_expected(accepts)} but found {found}"

    hint = None
    if tok.type == "EQUAL" and "EQEQ" in accepts:
        message = "'=' assigns; use '==' to compare"
    elif tok.type in _COMPARISONS and "AND" in accepts and not _COMPARISONS & accepts:
        message = f"comparisons do not chain: found a second '{tok}'"
        hint = "write a < b and b < c"
    elif tok.type == "LBRACE" and "ARROW" in accepts:
        message = "missing return type: expected '->' before the method body"
        hint = "e.g. forward(x: f32[B, 4]) -> f32[B, 4] { ... }"
    elif {"CALL_LPAR", "INDEX_LSQB"} & accepts and tok.type in ("LPAR", "LSQB"):
        message = f"'{tok}' must be on the same line as what comes before it"
        hint = f"a '{tok}' that starts a line begins a new statement"
    elif (_is_keyword(tok.type) and "NAME" in accepts and "INT" not in accepts
          and not any(_is_keyword(t) for t in accepts)):
        message = f"'{tok}' is a reserved word and cannot be used as a name"
        hint = f"write `{tok}` in backticks to use it as a name"
    elif tok.type in ("EQUAL", "DOT", "INDEX_LSQB", "CALL_LPAR") and (word := _keyword_before(text, tok)):
        loc = at(word.line, word.column)  # `for = Linear(...)`: a keyword used as the name it stands for
        message = f"'{word}' is a reserved word and cannot be used as a name"
        hint = f"write `{word}` in backticks to use it as a name"
    else:
        opener = _unclosed(text, tok.end_pos if tok.type == "$END" else tok.start_pos)
        if opener is not None and _closing_helps(err, _CLOSER[opener.value]):
            hint = f"the '{opener}' at line {opener.line}, column {opener.column} is not closed"
    return ShipeiError(message, loc, hint)


def _closing_helps(err: UnexpectedToken, closer: str) -> bool:
    """Whether the token that failed would be accepted after `closer`: only then is an unclosed
    bracket a likely cause (a misplaced statement inside a body is not one)."""
    if closer not in err.accepts:
        return False
    if err.token.type == "$END":
        return True
    parser = err.interactive_parser.copy()
    try:
        parser.feed_token(Token(closer, _parser().get_terminal(closer).pattern.value))
        return err.token.type in parser.accepts()
    except (UnexpectedInput, ShipeiError):  # the closer alone does not fit, or builds nothing valid
        return False
