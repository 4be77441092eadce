"""Draw a graph, partitioned or not, as a standalone SVG or one self-contained HTML page.

The standard library only: graphviz and matplotlib may not be installed where shipei is, and a
picture of a partition is wanted exactly there. The layout is Sugiyama's, kept small and
deterministic (no set or hash order anywhere):

1. Rows by longest path from the graph's inputs, top to bottom; a node that depends on no input (a
   constant, a weight's transpose, a mask built from `iota`) hangs just above its first reader
   instead of crowding the top row, and the outputs share the bottom row.
2. An edge that skips rows runs through a thin dummy point in each, so a residual connection gets a
   lane of its own instead of cutting through the boxes between.
3. Order within a row by barycenter sweeps, down and up, keeping the order with fewest crossings.
4. x by least squares under the row's order and spacing (pool-adjacent-violators): one longest path
   held on a vertical line, each other box pulled toward its neighbours, then long edges
   straightened. A left margin names the outermost layer (`h.3`) of each run of rows, which is how
   one finds one's way in a 450-node picture.

Colour is the placement: one hue per target, a shade per device, grey where there is none. Transfers
are hexagons with a bold outline labelled with the bytes they move. Every box's `<title>` (the
hover tooltip) has the node's IR line, module, source, stage and, with a report, why it went there.
"""

from __future__ import annotations

import colorsys
import html
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from .cost import HOST, Costs, format_bytes, link, nbytes
from .graph import Graph, Node, Value
from .passes.partition import PartitionReport
from .placement import DEVICE_KINDS, Placement
from .printer import print_node, value_names
from .region import regions
from .registry import all_ops

#: Hue per target (degrees): far apart, so four targets stay apart even as light fills.
_HUES = {"torch": 8, "jax": 214, "tf": 42, "mindspore": 150}
_GREY = ("#e3e5e8", "#8a9099")
_ROW, _BOX_H, _GAP, _DUMMY_W = 58, 32, 18, 6
#: Widths of a character at 11 and 9 px, a little over a monospace font's 0.6 em: boxes and the
#: picture are sized from them, so text fits whichever monospace font the viewer has.
_CHAR, _SMALL_CHAR = 7.0, 5.7
_LIGHT = 1e-6  # the weight of side nodes and dummies in placing x: they follow, the main chain leads
_TRANSFER = frozenset(name for name, opdef in all_ops().items() if "transfer" in opdef.traits)


@dataclass(eq=False)
class _Box:
    """One thing in a row: an input, a node, an output, or a dummy point of an edge skipping rows."""

    kind: str  # "input", "node", "output" or "dummy"
    row: int
    width: float
    node: Node | None = None
    value: Value | None = None  # an input's or an output's value
    x: float = 0.0
    side: bool = False  # a node that depends on no input: it moves to its reader, not the reader to it
    spine: bool = False  # on the path the picture hangs on (see `_spine`)
    up: list[_Box] = field(default_factory=list)  # neighbours in the row above
    down: list[_Box] = field(default_factory=list)


@dataclass(eq=False)
class _Edge:
    """Values flowing from one box to another, through `path` (the two ends and the dummies)."""

    values: list[Value]
    path: list[_Box]


def _colour(placement: Placement | None) -> tuple[str, str]:
    """(fill, stroke) for a placement: its target's hue, lighter for CPU and darker for each device
    kind after it and each index; grey when it is not a full placement (a hint, or none)."""
    if placement is None or not placement.full or placement.target not in _HUES:
        return _GREY
    rank = DEVICE_KINDS.index(placement.device) + 0.6 * (placement.index or 0)
    hue = _HUES[placement.target] / 360

    def hex_of(lightness: float, saturation: float) -> str:
        r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
        return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"

    return hex_of(max(0.86 - 0.07 * rank, 0.55), 0.72), hex_of(max(0.42 - 0.05 * rank, 0.2), 0.6)


def _place_name(placement: Placement | None) -> str:
    if placement == HOST:
        return "host"
    return str(placement) if placement is not None and placement.full else "unplaced"


def _source(transfer: Node) -> Placement | None:
    """Where a transfer's value comes from: its producer's placement, or the host for a graph input."""
    producer = transfer.operands[0].producer if transfer.operands else None
    return producer.placement if producer is not None else HOST


def _moved(transfer: Node, dims: Mapping[str, int]) -> str:
    return format_bytes(sum(nbytes(r, dims) for r in transfer.results))


def _compact(text: str) -> str:
    return text.replace(", ", ",")


def _node_lines(node: Node, dims: Mapping[str, int]) -> tuple[str, str]:
    """A box's two lines: the op and its result type; for a transfer, its bytes and its two ends."""
    if node.op in _TRANSFER:
        return f"transfer {_moved(node, dims)}", f"{_place_name(_source(node))} → {_place_name(node.placement)}"
    types = list(dict.fromkeys(_compact(str(r.type)) for r in node.results))
    if len(node.results) <= 1:
        return node.op, types[0] if types else "()"
    return node.op, f"{types[0]} ×{len(node.results)}" if len(types) == 1 else f"{types[0]}, …"


# -- layout ---------------------------------------------------------------------------------------

def _layout(graph: Graph, dims: Mapping[str, int]) -> tuple[list[list[_Box]], list[_Edge], dict[int, tuple[str, str]]]:
    """Rows of boxes with x set, the edges, and each node box's two label lines (by id of box)."""
    box_of: dict[Value, _Box] = {}
    boxes: list[_Box] = []
    labels: dict[int, tuple[str, str]] = {}

    def add(box: _Box, lines: tuple[str, str]) -> _Box:
        box.width = max(56.0, _CHAR * len(lines[0]) + 18, _SMALL_CHAR * len(lines[1]) + 18)
        if box.kind != "node" or box.node.op in _TRANSFER:  # rounded ends and hexagon points need room
            box.width += 16
        labels[id(box)] = lines
        boxes.append(box)
        return box

    for v in graph.inputs:
        box_of[v] = add(_Box("input", 0, 0, value=v), (v.name or "?", _compact(str(v.type))))
    fed: set[int] = set()  # ids of the nodes that depend on an input
    node_boxes: list[_Box] = []
    for node in graph.nodes:
        preds = [box_of[v] for v in node.operands if v in box_of]
        box = add(_Box("node", 1 + max((p.row for p in preds), default=0), 0, node=node), _node_lines(node, dims))
        if any(p.kind == "input" or id(p.node) in fed for p in preds):
            fed.add(id(node))
        node_boxes.append(box)
        box_of.update((r, box) for r in node.results)
    last = 1 + max((b.row for b in boxes), default=0)
    outs = [add(_Box("output", last, 0, value=v), (f"output {i}", _compact(str(v.type))))
            for i, v in enumerate(graph.outputs)]
    readers: dict[int, list[_Box]] = {}
    for box in node_boxes + outs:
        for v in (box.node.operands if box.node else [box.value]):
            if v in box_of:
                readers.setdefault(id(box_of[v]), []).append(box)
    for box in reversed(node_boxes):  # readers come later in the schedule: their rows are final
        box.side = id(box.node) not in fed
        if box.side and id(box) in readers:
            box.row = min(r.row for r in readers[id(box)]) - 1

    edges: list[_Edge] = []
    for box in node_boxes + outs:
        by_source: dict[int, _Edge] = {}
        for v in (box.node.operands if box.node else [box.value]):
            if v not in box_of:
                continue
            source = box_of[v]
            if id(source) in by_source:
                if v not in by_source[id(source)].values:
                    by_source[id(source)].values.append(v)
                continue
            dummies = [_Box("dummy", r, _DUMMY_W) for r in range(source.row + 1, box.row)]
            boxes += dummies
            by_source[id(source)] = edge = _Edge([v], [source, *dummies, box])
            edges.append(edge)
            for a, b in zip(edge.path, edge.path[1:]):
                a.down.append(b)
                b.up.append(a)
    rows: list[list[_Box]] = [[] for _ in range(last + 1)]
    for box in boxes:
        rows[box.row].append(box)
    _order(rows)
    _spine(rows)
    _place(rows, edges)
    return rows, edges, labels


def _spine(rows: list[list[_Box]]) -> None:
    """Mark a path through every row, walked up from the first box of the bottom row through main
    nodes where it can (else a dummy, else anything). Held on one vertical line, it keeps the picture
    from drifting: pulled only by barycenters, each attention block's fan of q, k and v moved the
    chain half a box sideways, 550 px over a 12-block transformer."""
    box = rows[-1][0] if rows and rows[-1] else None
    while box is not None:
        box.spine = True
        box = min(box.up, key=lambda u: (u.side, u.kind == "dummy"), default=None)


def _order(rows: list[list[_Box]]) -> None:
    """Barycenter sweeps (down by the row above, up by the row below); keeps the best order seen."""
    best, fewest = [list(r) for r in rows], _crossings(rows)
    for sweep in range(8):
        down = sweep % 2 == 0
        for i in (range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)):
            position = {id(b): k for k, b in enumerate(rows[i - 1 if down else i + 1])}
            keys = []
            for k, box in enumerate(rows[i]):
                near = [position[id(n)] for n in (box.up if down else box.down)]
                keys.append(sum(near) / len(near) if near else k)
            rows[i][:] = [b for _, _, b in sorted(zip(keys, range(len(keys)), rows[i]), key=lambda t: t[:2])]
        count = _crossings(rows)
        if count < fewest:
            best, fewest = [list(r) for r in rows], count
    for row, kept in zip(rows, best):
        row[:] = kept


def _crossings(rows: list[list[_Box]]) -> int:
    """Pairs of segments that cross between adjacent rows (quadratic per row pair: rows are narrow)."""
    total = 0
    for upper, lower in zip(rows, rows[1:]):
        position = {id(b): k for k, b in enumerate(lower)}
        ends = [(k, position[id(n)]) for k, b in enumerate(upper) for n in b.down]
        total += sum(1 for i, (a, b) in enumerate(ends) for c, d in ends[i + 1:] if (a - c) * (b - d) < 0)
    return total


def _place(rows: list[list[_Box]], edges: list[_Edge]) -> None:
    """x of each box: start packed, then sweep rows pulling the spine to x = 0 and each other box to
    its neighbours' mean x, the nearest positions in least squares that keep the row's order and
    spacing; then straighten long edges. Side nodes and dummies barely pull: the main chain stays
    straight and they move to it, where otherwise each weight's transpose and each residual lane
    would push it sideways."""
    for row in rows:
        _fit(row, [0.0] * len(row), [0.0] * len(row))
    for sweep in range(9):  # odd: the last sweep goes down, so each row lines up under the one above
        order = range(len(rows)) if sweep % 2 == 0 else range(len(rows) - 1, -1, -1)
        for i in order:
            row = rows[i]
            want = []
            for box in row:
                if box.spine:
                    want.append(0.0)
                    continue
                near = (box.up or box.down) if sweep % 2 == 0 else (box.down or box.up)
                weights = [_LIGHT if n.side or n.kind == "dummy" else 1.0 for n in near]
                want.append(sum(w * n.x for w, n in zip(weights, near)) / sum(weights) if near else box.x)
            _fit(row, want, [1e3 if b.spine else _LIGHT if b.side or b.kind == "dummy" else 1.0 for b in row])
    _straighten(rows, edges)
    left = min((b.x - b.width / 2 for row in rows for b in row), default=0.0)
    for row in rows:
        for box in row:
            box.x -= left


def _straighten(rows: list[list[_Box]], edges: list[_Edge]) -> None:
    """Put each long edge's dummies on one vertical line where the boxes beside them leave room."""
    index = {id(b): k for row in rows for k, b in enumerate(row)}
    for edge in edges:
        dummies = edge.path[1:-1]
        if len(dummies) < 2:
            continue
        lo, hi = -1e18, 1e18
        for d in dummies:
            row, k = rows[d.row], index[id(d)]
            if k:
                lo = max(lo, row[k - 1].x + _spacing(row[k - 1], d))
            if k + 1 < len(row):
                hi = min(hi, row[k + 1].x - _spacing(d, row[k + 1]))
        if lo <= hi:
            x = min(max(sorted(d.x for d in dummies)[len(dummies) // 2], lo), hi)
            for d in dummies:
                d.x = x


def _spacing(a: _Box, b: _Box) -> float:
    """The least distance between the centres of neighbours `a` and `b` in a row."""
    return (a.width + b.width) / 2 + (8 if "dummy" in (a.kind, b.kind) else _GAP)


def _fit(row: list[_Box], want: list[float], weight: list[float]) -> None:
    """Set the row's x as near `want` as its order and spacing allow."""
    offsets = [0.0]
    for a, b in zip(row, row[1:]):
        offsets.append(offsets[-1] + _spacing(a, b))
    for box, x in zip(row, _isotonic(want, offsets, weight)):
        box.x = x


def _isotonic(want: list[float], offsets: list[float], weight: list[float]) -> list[float]:
    """Pool-adjacent-violators: the x minimizing sum weight * (x - want)^2 where each x[k+1] - x[k]
    is at least offsets[k+1] - offsets[k] (the order and spacing of boxes in a row, or of ports)."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for w_, o, wt in zip(want, offsets, weight):
        blocks.append([(w_ - o) * max(wt, 1e-9), max(wt, 1e-9), 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, w, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += w
            blocks[-1][2] += n
    xs: list[float] = []
    for s, w, n in blocks:
        xs += [s / w + offsets[len(xs) + i] for i in range(int(n))]
    return xs


# -- SVG ------------------------------------------------------------------------------------------

def draw_svg(graph: Graph, report: PartitionReport | None = None, dims: Mapping[str, int] | None = None) -> str:
    """A standalone SVG of `graph`, top to bottom, coloured by placement, with a legend; `report` (the
    partition pass's) adds a summary line and each node's reason; `dims` sizes transfers' bytes
    (symbols it does not give are `ir.types.DEFAULT_DIM`)."""
    dims = dims or {}
    rows, edges, labels = _layout(graph, dims)
    names = value_names(graph)
    stage_of = {id(n): k for k, r in enumerate(regions(graph, lambda n: n.placement)) for n in r.nodes}
    header = [graph.name] + ([report.summary(graph, dims)] if report else [])
    legend, legend_w, legend_h = _legend(graph)
    runs = _module_runs(rows)
    gutter = max([_CHAR * len(name) + 24 for name, _, _ in runs], default=0.0)
    width = max([b.x + b.width / 2 for row in rows for b in row] + [0.0]) + 40 + gutter
    width = max(width, legend_w + 40, 40 + max(_CHAR * (1.4 if k == 0 else 1) * len(t) for k, t in enumerate(header)))
    top = 24 + 18 * len(header) + legend_h + 16
    height = top + _ROW * len(rows) + 10

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace">',
           _STYLE, '<rect width="100%" height="100%" fill="#ffffff"/>']
    for k, text in enumerate(header):
        cls = "title" if k == 0 else "summary"
        out.append(f'<text class="{cls}" x="20" y="{30 + 18 * k}">{html.escape(text)}</text>')
    out.append(f'<g class="legend" transform="translate(20,{24 + 18 * len(header)})">{legend}</g>')
    out.append(f'<g transform="translate(20,{top})">')
    for name, first, last in runs:
        out.append(f'<g class="module"><text class="key" x="{gutter - 14:.0f}" y="{first * _ROW + 20}" '
                   f'text-anchor="end">{html.escape(name)}</text><line x1="{gutter - 6:.0f}" y1="{first * _ROW}" '
                   f'x2="{gutter - 6:.0f}" y2="{last * _ROW + _BOX_H}" stroke="#d0d7de" stroke-width="2"/></g>')
    out.append(f'<g transform="translate({gutter:.0f},0)">')

    ports = _ports(edges)
    out.append('<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" '
               'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8c959f"/></marker></defs>')
    out += [_edge_svg(e, names, ports[(k, 0)], ports[(k, -1)]) for k, e in enumerate(edges)]
    out += [_box_svg(b, labels[id(b)], names, report, stage_of, dims) for row in rows for b in row if b.kind != "dummy"]
    out.append("</g></g></svg>")
    return "\n".join(out) + "\n"


def _module_runs(rows: list[list[_Box]]) -> list[tuple[str, int, int]]:
    """Runs of rows whose first main node is in one outermost layer (`h.3`, `layers.0`, `fc`), for
    the labels in the left margin that tell where one is in a tall picture; top-level rows have none."""
    runs: list[list] = []  # [name, first row, last row]
    for i, row in enumerate(rows):
        main = [b.node.module for b in row if b.node is not None and not b.side]
        if not main:
            continue
        parts = main[0].split(".")
        outer = ".".join(parts[:1] + list(itertools.takewhile(str.isdigit, parts[1:])))
        if runs and runs[-1][0] == outer:
            runs[-1][2] = i
        else:
            runs.append([outer, i, i])
    return [(name, first, last) for name, first, last in runs if name]


_STYLE = """<style>
.title { font-size: 15px; font-weight: bold; fill: #1f2328; }
.summary { font-size: 11px; fill: #57606a; }
.label { font-size: 11px; fill: #1f2328; text-anchor: middle; }
.sub { font-size: 9px; fill: #424a53; text-anchor: middle; }
.key { font-size: 11px; fill: #1f2328; }
.edge { fill: none; stroke: #8c959f; stroke-width: 1.2; }
.node:hover > rect, .node:hover > polygon, .input:hover > rect, .output:hover > rect { stroke-width: 2.5; }
</style>"""


def _legend(graph: Graph) -> tuple[str, float, float]:
    """Swatches for each placement with its node count, in schedule order, then the shapes' meanings."""
    counts: dict[str, tuple[int, Placement | None]] = {}
    for node in graph.nodes:
        key = _place_name(node.placement)
        counts[key] = (counts.get(key, (0, None))[0] + 1, node.placement if key != "unplaced" else None)
    items = []
    for key, (n, place) in counts.items():
        fill, stroke = _colour(place)
        items.append((f'<rect width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>',
                      f"{key} ({n})", key))
    items.append(('<rect width="22" height="14" rx="7" fill="#ffffff" stroke="#57606a"/>', "input / output", ""))
    if any(n.op in _TRANSFER for n in graph.nodes):
        items.append((f'<polygon points="{_hexagon(0, 0, 22, 14)}" fill="#ffffff" stroke="#1f2328" '
                      'stroke-width="2"/>', "transfer", ""))
    parts, x, y = [], 0.0, 0.0
    for shape, text, key in items:
        w = 30 + _CHAR * len(text) + 18
        if x and x + w > 720:
            x, y = 0.0, y + 22
        data = f' data-placement="{html.escape(key)}"' if key else ""
        parts.append(f'<g class="legend-item"{data} transform="translate({x:.0f},{y:.0f})">{shape}'
                     f'<text class="key" x="30" y="11">{html.escape(text)}</text></g>')
        x += w
    return "".join(parts), (x if not y else 720.0), y + 22


def _hexagon(x: float, y: float, w: float, h: float) -> str:
    """Points of a flat hexagon in the box (x, y, w, h): the shape that marks a transfer."""
    d = min(h / 2, w / 4)
    pts = [(x + d, y), (x + w - d, y), (x + w, y + h / 2), (x + w - d, y + h), (x + d, y + h), (x, y + h / 2)]
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)


def _ports(edges: list[_Edge]) -> dict[tuple[int, int], float]:
    """Where each edge leaves its source and enters its target: on the box's bottom or top as near
    the other end's x as the box allows, at least 9 px apart, so an edge straight below stays
    straight and edges to the sides fan out instead of meeting at one point."""
    groups: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for k, e in enumerate(edges):
        groups.setdefault((id(e.path[0]), 0), []).append((e.path[1].x, k))
        groups.setdefault((id(e.path[-1]), -1), []).append((e.path[-2].x, k))
    out: dict[tuple[int, int], float] = {}
    for (_, end), ends in groups.items():
        ends.sort()
        box = edges[ends[0][1]].path[end]
        reach = box.width / 2 - 10
        want = [min(max(x - box.x, -reach), reach) for x, _ in ends]
        xs = _isotonic(want, [9.0 * i for i in range(len(ends))], [1.0] * len(ends))
        for x, (_, k) in zip(xs, ends):
            out[(k, end)] = box.x + min(max(x, -box.width / 2 + 4), box.width / 2 - 4)
    return out


def _edge_svg(edge: _Edge, names: dict[Value, str], start: float, end: float) -> str:
    """A smooth path through the edge's dummies: S-curves between rows, straight down through them."""
    points = [(start, edge.path[0].row * _ROW + _BOX_H)]
    for d in edge.path[1:-1]:
        points += [(d.x, d.row * _ROW), (d.x, d.row * _ROW + _BOX_H)]
    points.append((end, edge.path[-1].row * _ROW - 2))
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for k, ((x0, y0), (x1, y1)) in enumerate(zip(points, points[1:])):
        if k % 2:
            d += f" L{x1:.1f},{y1:.1f}"
        else:
            m = (y0 + y1) / 2
            d += f" C{x0:.1f},{m:.1f} {x1:.1f},{m:.1f} {x1:.1f},{y1:.1f}"
    target = edge.path[-1]
    into = names.get(target.node.result, "%?") if target.node and len(target.node.results) == 1 else (
        target.node.op if target.node else "the outputs")
    what = ", ".join(f"{names.get(v, '%?')}: {v.type}" for v in edge.values)
    return (f'<path class="edge" d="{d}" marker-end="url(#arrow)"><title>{html.escape(what)} → '
            f'{html.escape(into)}</title></path>')


def _box_svg(box: _Box, lines: tuple[str, str], names: dict[Value, str], report: PartitionReport | None,
             stage_of: dict[int, int], dims: Mapping[str, int]) -> str:
    """One input, node or output: its shape, two lines of label and its tooltip."""
    x, y, w, h = box.x - box.width / 2, box.row * _ROW, box.width, _BOX_H
    node = box.node
    if node is None:
        v = box.value
        cls, fill, stroke, line = box.kind, "#ffffff", "#57606a", 1.5
        tip = (f"{names.get(v, '%?')}: {v.type}\ngraph input" if box.kind == "input"
               else f"{lines[0]}: {v.type} = {names.get(v, '%?')}")
        shape = f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{h}" rx="{h / 2}"'
    else:
        fill, stroke = _colour(node.placement)
        tip = _tooltip(node, names, report, stage_of, dims)
        if node.op in _TRANSFER:
            cls, stroke, line = "node transfer", "#1f2328", 2.5
            shape = f'<polygon points="{_hexagon(x, y, w, h)}"'
        else:
            cls, line = "node", 1.0
            shape = f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{h}" rx="5"'
    data = f' data-placement="{html.escape(_place_name(node.placement))}"' if node else ""
    return (f'<g class="{cls}"{data}><title>{html.escape(tip)}</title>{shape} fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{line}"/><text class="label" x="{box.x:.1f}" y="{y + 14}">{html.escape(lines[0])}'
            f'</text><text class="sub" x="{box.x:.1f}" y="{y + 26}">{html.escape(lines[1])}</text></g>')


def _tooltip(node: Node, names: dict[Value, str], report: PartitionReport | None, stage_of: dict[int, int],
             dims: Mapping[str, int]) -> str:
    """The node's IR line, then where it came from and where it runs, and why."""
    line = print_node(node, names)
    lines = [line if len(line) <= 240 else line[:239] + "…", f"module: {node.module or '(top level)'}"]
    if node.loc:
        lines.append(f"source: {node.loc}")
    where = _place_name(node.placement)
    if node.placement is not None and not node.placement.full:
        where += f" (hint: {node.placement})"
    lines.append(f"placement: {where}, stage {stage_of.get(id(node), '?')}")
    decision = report.decisions.get(node) if report else None
    if decision is not None:
        lines.append(f"placed by: {decision.reason}")
    if node.op in _TRANSFER:
        source = _source(node)
        placed = source is not None and node.placement is not None and node.placement.full
        way = link(source, node.placement, node.result.dtype, Costs()) if placed else None
        lines.append(f"moves {_moved(node, dims)} from {_place_name(source)}" + (f" by {way.kind}" if way else ""))
    return "\n".join(lines)


# -- HTML -----------------------------------------------------------------------------------------

def draw_html(graph: Graph, report: PartitionReport | None = None, dims: Mapping[str, int] | None = None) -> str:
    """One self-contained page (no scripts, nothing fetched): a heading, the report's summary line
    when given, a table of the stages (the schedule's runs of one placement: their nodes, layers and
    the bytes their transfers bring in) and the SVG."""
    dims = dims or {}
    rows = []
    for k, stage in enumerate(regions(graph, lambda n: n.placement)):
        fill, stroke = _colour(stage.key)
        transfers = [n for n in stage.nodes if n.op in _TRANSFER]
        moved = format_bytes(sum(nbytes(r, dims) for n in transfers for r in n.results)) if transfers else ""
        modules = _modules([n for n in stage.nodes if n.op not in _TRANSFER])
        rows.append(f'<tr><td>{k}</td><td><span class="swatch" style="background:{fill};border-color:{stroke}">'
                    f'</span>{html.escape(_place_name(stage.key))}</td><td>{len(stage.nodes)}</td>'
                    f'<td>{moved}</td><td>{html.escape(", ".join(modules))}</td></tr>')
    summary = f'<p class="summary">{html.escape(report.summary(graph, dims))}</p>' if report else ""
    name = html.escape(graph.name)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{name} · shipei</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1f2328; }}
.summary {{ font-family: monospace; color: #57606a; }}
table.stages {{ border-collapse: collapse; margin: 12px 0 20px; }}
table.stages th, table.stages td {{ border-bottom: 1px solid #d0d7de; padding: 4px 12px; text-align: left; }}
table.stages td:nth-child(3), table.stages td:nth-child(4) {{ text-align: right; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border: 1px solid; border-radius: 3px;
          margin-right: 6px; vertical-align: -1px; }}
.graph {{ overflow: auto; border: 1px solid #d0d7de; border-radius: 6px; }}
</style>
</head>
<body>
<h1>{name}</h1>
{summary}
<table class="stages">
<thead><tr><th>stage</th><th>placement</th><th>nodes</th><th>transfers in</th><th>modules</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<div class="graph">
{draw_svg(graph, report, dims)}</div>
</body>
</html>
"""


def _modules(nodes: list[Node]) -> list[str]:
    """The outermost module paths among the nodes' (`h.0` covers `h.0.attn`), in order of first use;
    `(top level)` for nodes outside any layer. Callers leave transfers out: a transfer carries its
    producer's module, which runs in the stage before."""
    paths = list(dict.fromkeys(n.module for n in nodes))
    return [p or "(top level)" for p in paths if not any(q and p.startswith(q + ".") for q in paths)]
