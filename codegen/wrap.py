"""Long generated lines broken the way a formatter would, so programs read within the project's
line length (120) without a formatter installed where they are generated.

A line too long is split, as black splits it, at its last top-level bracket pair whose opening
fits: the opening ends the first line, the arguments follow one indent deeper, packed by commas,
and the closing bracket starts the last line with whatever followed it (`;  del x`). An assignment
without such a bracket has its right-hand side put in parentheses and broken before its
lowest-precedence operators. Every piece is wrapped again until it fits or cannot be split.
Comments are shortened with `...`. Only code the writer made is wrapped, and it holds no triple-
quoted strings or line continuations, which is what this scanner assumes.
"""

from __future__ import annotations

LIMIT = 120
_OPEN, _CLOSE = "([{", ")]}"
#: binary operators, lowest precedence first; the writer spaces them as `a + b`
_OPERATORS = ((" if ", " else "), (" + ", " - "), (" * ", " / ", " @ "))


def wrap_line(line: str, limit: int = LIMIT) -> list[str]:
    if len(line) <= limit:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    if line.lstrip().startswith("#"):
        return [line[: limit - 3] + "..."]
    pieces = _bracket_split(line, indent, limit) or _operator_split(line, indent, limit)
    if pieces is None:
        return [line]
    return [out for piece in pieces for out in wrap_line(piece, limit)]


def _depths(text: str) -> list[int]:
    """The bracket depth before each character; -1 inside string literals."""
    out, depth, quote, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        if quote:
            out.append(-1)
            if c == "\\":
                out.append(-1)
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            out.append(-1)
            quote = c
        else:
            if c in _CLOSE:
                depth -= 1
            out.append(depth)
            if c in _OPEN:
                depth += 1
        i += 1
    return out


def _top_level_pairs(text: str, depths: list[int]) -> list[tuple[int, int]]:
    """(open, close) indices of the bracket pairs at depth 0."""
    pairs, start = [], None
    for i, c in enumerate(text):
        if depths[i] == 0 and c in _OPEN:
            start = i
        elif depths[i] == 0 and c in _CLOSE and start is not None:
            pairs.append((start, i))
            start = None
    return pairs


def _bracket_split(line: str, indent: str, limit: int) -> list[str] | None:
    depths = _depths(line)
    for start, end in reversed(_top_level_pairs(line, depths)):
        inner = line[start + 1:end]
        if len(line[: start + 1]) > limit or not inner.strip():
            continue
        items, begin = [], start + 1
        for i in range(start + 1, end):
            if line[i] == "," and depths[i] == 1:
                items.append(line[begin:i].strip())
                begin = i + 1
        items.append(line[begin:end].strip())
        trailing = items[-1] == ""  # a one-element tuple keeps its comma
        items = [item for item in items if item]
        body = _pack(items, indent + "    ", limit, trailing)
        return [line[: start + 1], *body, indent + line[end:]]
    return None


def _pack(items: list[str], indent: str, limit: int, trailing: bool) -> list[str]:
    """Items joined by commas into lines of at most `limit`."""
    lines: list[str] = []
    for n, item in enumerate(items):
        text = item + ("," if n < len(items) - 1 or trailing else "")
        if lines and len(lines[-1]) + 1 + len(text) <= limit:
            lines[-1] += " " + text
        else:
            lines.append(indent + text)
    return lines


def _operator_split(line: str, indent: str, limit: int) -> list[str] | None:
    """`target = a + b * c;  del x` as `target = (` / `a` / `+ b * c` / `);  del x`."""
    depths = _depths(line)
    equals = next((i for i in range(len(line) - 2) if line[i:i + 3] == " = " and depths[i] == 0), None)
    if equals is None:
        return None
    end = next((i for i in range(equals, len(line)) if line[i] == ";" and depths[i] == 0), len(line))
    expr = line[equals + 3:end]
    inner = _depths(expr)
    for operators in _OPERATORS:
        cuts = [i for i in range(len(expr)) if inner[i] == 0 and any(expr.startswith(op, i) for op in operators)]
        if cuts:
            parts = [expr[a:b].strip() for a, b in zip([0, *cuts], [*cuts, len(expr)])]
            return [line[: equals + 3] + "(", *(indent + "    " + p for p in parts), indent + ")" + line[end:]]
    return None
