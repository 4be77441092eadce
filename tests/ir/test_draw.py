"""ir.draw: the SVG is well-formed XML with one element per node and edge, coloured and labelled by
placement, transfers labelled with their bytes, user text escaped, the same every time; the HTML
page carries the partition's summary and a table of its stages."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from shipei.codegen import TARGETS, capabilities
from shipei.ir.draw import draw_html, draw_svg
from shipei.ir.errors import SourceLoc
from shipei.ir.graph import Builder, Graph, Init, Value
from shipei.ir.passes.manager import PassContext, run_passes
from shipei.ir.passes.partition import PartitionReport, PartitionRequest
from shipei.ir.placement import Placement
from shipei.ir.types import DType, Sym, TensorType

import shipei

P = Placement.parse
CAPS = {t: capabilities(t) for t in TARGETS}
B = Sym.named("B")
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & \'q\''


def model(module: str = "enc", file: str = "m.sp") -> Graph:
    """x * w -> relu on torch (layer `module`), tanh on jax, + x: two stages and one transfer."""
    g = Graph("G")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (B, 4)))
    w = b.add_param("w", TensorType(DType.f32, (4,)), Init("ones"))
    b.module, b.placement, b.loc = module, P("torch"), SourceLoc(file, 3, 9)
    h = b("relu", b("mul", x, w))
    b.module, b.placement, b.loc = "dec", P("jax"), None
    y = b("tanh", h)
    b.module, b.placement = "", None
    g.outputs = [b("add", y, x)]
    return g


def partition(g: Graph, places: list[str], dims: dict[str, int] | None = None) -> tuple[Graph, PartitionReport]:
    ctx = PassContext(partition=PartitionRequest([P(p) for p in places], CAPS, dims=dims or {}))
    g = run_passes(g, ["partition"], ctx)
    assert ctx.results.partition_report is not None
    return g, ctx.results.partition_report


def with_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in e.get("class", "").split()]


def title(e: ET.Element) -> str:
    t = e.find(f"{SVG}title")
    assert t is not None and t.text is not None
    return t.text


def texts(e: ET.Element) -> list[str]:
    return [t.text or "" for t in e.iter(f"{SVG}text")]


def bounds(e: ET.Element) -> tuple[float, float, float]:
    """Left, top and width of a box's rect or polygon."""
    rect = e.find(f"{SVG}rect")
    if rect is not None:
        return float(rect.get("x", "nan")), float(rect.get("y", "nan")), float(rect.get("width", "nan"))
    polygon = e.find(f"{SVG}polygon")
    assert polygon is not None
    points = [tuple(map(float, p.split(","))) for p in polygon.get("points", "").split()]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs) - min(xs)


def expected_edges(g: Graph) -> int:
    """Distinct (drawn source, reader) pairs: a node or input feeding a node or an output; params
    are not drawn, and two results of one node read by one node make one edge."""
    drawn = set(g.inputs) | {r for n in g.nodes for r in n.results}

    def source(v: Value) -> int:
        return id(v.producer) if v.producer is not None else id(v)

    pairs = {(source(v), id(n)) for n in g.nodes for v in n.operands if v in drawn}
    pairs |= {(source(v), -k - 1) for k, v in enumerate(g.outputs) if v in drawn}
    return len(pairs)


def test_one_element_per_node_input_output_and_edge() -> None:
    g, report = partition(model(), ["torch:cpu", "jax:cpu"])
    root = ET.fromstring(draw_svg(g, report))
    assert root.tag == f"{SVG}svg"
    assert len(with_class(root, "node")) == len(g.nodes) == 5
    assert len(with_class(root, "input")) == 1 and len(with_class(root, "output")) == 1
    assert len(with_class(root, "edge")) == expected_edges(g) == 7
    assert [texts(e)[0] for e in with_class(root, "node")] == ["mul", "relu", "transfer 128 B", "tanh", "add"]


def transformer() -> tuple[Graph, PartitionReport]:
    g = shipei.parse("examples/transformer.sp", n_layers=2)
    device_map = {"h.0": P("torch:cpu"), "h.1": P("jax:cpu"), "*": P("tf:cpu")}
    ctx = PassContext(partition=PartitionRequest([P("torch:cpu"), P("jax:cpu"), P("tf:cpu")], CAPS, device_map))
    g = run_passes(g, ["canonicalize", "partition"], ctx)
    assert ctx.results.partition_report is not None
    return g, ctx.results.partition_report


def test_the_transformer_example_draws_every_node_and_edge() -> None:
    """Splits (three results), weight transposes hanging beside the chain, residual edges skipping
    many rows, constants copied per placement: still one element per node and per edge, and the
    left margin names each block."""
    g, report = transformer()
    root = ET.fromstring(draw_svg(g, report, {"B": 2, "T": 16}))
    assert len(with_class(root, "node")) == len(g.nodes)
    assert len(with_class(root, "edge")) == expected_edges(g)
    assert [texts(e)[0] for e in with_class(root, "transfer")] == ["transfer 16.0 KiB"] * 3
    assert [texts(e)[0] for e in with_class(root, "module")] == ["wte", "h.0", "h.1", "ln_f", "lm_head"]


def test_boxes_do_not_overlap_and_edges_point_down() -> None:
    g, report = partition(model(), ["torch:cpu", "jax:cpu"])
    root = ET.fromstring(draw_svg(g, report))
    boxes = [bounds(e) for e in with_class(root, "node") + with_class(root, "input") + with_class(root, "output")]
    for i, (x, y, w) in enumerate(boxes):
        for x2, y2, w2 in boxes[i + 1:]:
            assert y != y2 or x + w <= x2 or x2 + w2 <= x, "two boxes in one row overlap"
    for edge in with_class(root, "edge"):
        ys = [float(n) for n in re.findall(r"-?\d+\.?\d*", edge.get("d", ""))[1::2]]
        assert ys == sorted(ys), "an edge runs from its source down to its reader"


def test_a_chain_stands_straight_beside_what_hangs_off_it() -> None:
    """A weight's transpose reads no input: it sits just above its reader and beside the chain; the
    edge from x to the last add runs down a straight lane of its own; neither pushes the chain."""
    g = Graph("Chain")
    b = Builder(g)
    x = b.input("x", TensorType(DType.f32, (B, 4)))
    h = b("relu", x)
    for k, op in enumerate(["exp", "tanh", "neg", "abs"]):
        w = b.add_param(f"w{k}", TensorType(DType.f32, (4, 4)), Init("ones"))
        h = b(op, b("matmul", h, b("transpose", w, perm=(1, 0))))
    g.outputs = [b("add", h, x)]
    root = ET.fromstring(draw_svg(g))
    chain = [e for e in with_class(root, "node") if texts(e)[0] != "transpose"]
    assert len({round(bounds(e)[0] + bounds(e)[2] / 2) for e in chain}) == 1
    rows = {bounds(e)[1]: texts(e)[0] for e in with_class(root, "node")}
    for e in with_class(root, "node"):
        if texts(e)[0] == "transpose":
            assert rows[bounds(e)[1] + 58] == "matmul", "a transpose sits in the row just above its matmul"
    (skip,) = [e for e in with_class(root, "edge") if title(e).startswith("%x") and title(e).endswith("%13")]
    lane = [float(x) for x in re.findall(r"L(-?[\d.]+),", skip.get("d", ""))]
    assert len(lane) == 9 and len(set(lane)) == 1, "x -> add runs down one straight lane"


def test_the_transformer_lays_out_without_crossings_and_with_straight_lanes() -> None:
    from shipei.ir.draw import _crossings, _layout

    g, report = transformer()
    rows, _, _ = _layout(g, {})
    assert _crossings(rows) == 0 and max(len(r) for r in rows) <= 6
    root = ET.fromstring(draw_svg(g, report))
    lanes = [re.findall(r"L(-?[\d.]+),", e.get("d", "")) for e in with_class(root, "edge")]
    assert sorted(len(lane) for lane in lanes if len(lane) > 4) == [6, 6, 15, 15], "the four residual edges"
    assert all(len(set(lane)) <= 1 for lane in lanes), "each edge skipping rows runs down one straight lane"


def test_legend_names_every_placement_and_colours_match() -> None:
    g, report = partition(model(), ["torch:cpu", "jax:cpu", "tf:cpu", "mindspore:cpu"])
    root = ET.fromstring(draw_svg(g, report))
    legend = {e.get("data-placement"): e for e in with_class(root, "legend-item") if e.get("data-placement")}
    assert set(legend) == {str(n.placement) for n in g.nodes} == {"torch:cpu", "jax:cpu"}
    assert texts(legend["jax:cpu"]) == ["jax:cpu (3)"] and texts(legend["torch:cpu"]) == ["torch:cpu (2)"]
    swatch = {k: e.find(f"{SVG}rect").get("fill") for k, e in legend.items()}
    assert len(set(swatch.values())) == 2
    for e in with_class(root, "node"):
        (shape,) = [c for c in e if c.tag in (f"{SVG}rect", f"{SVG}polygon")]
        assert shape.get("fill") == swatch[e.get("data-placement")]


def test_a_shade_per_device_and_a_hue_per_target() -> None:
    g = model()
    fills = {}
    for place in ["torch:cpu", "torch:cuda", "torch:cuda:1", "jax:cpu", "tf:cpu", "mindspore:ascend"]:
        for n in g.nodes:
            n.placement = P(place)
        root = ET.fromstring(draw_svg(g))
        fills[place] = with_class(root, "node")[0].find(f"{SVG}rect").get("fill")
    assert len(set(fills.values())) == len(fills)


@pytest.mark.parametrize(("dims", "label"), [({"B": 4}, "transfer 64 B"), ({"B": 4096}, "transfer 64.0 KiB"),
                                             ({"B": 2**17}, "transfer 2.0 MiB"), (None, "transfer 128 B")])
def test_transfers_are_hexagons_labelled_with_their_bytes(dims: dict[str, int] | None, label: str) -> None:
    """f32[B, 4] is 16*B bytes; without dims B is ir.types.DEFAULT_DIM (8)."""
    g, report = partition(model(), ["torch:cpu", "jax:cpu"])
    root = ET.fromstring(draw_svg(g, report, dims))
    (transfer,) = with_class(root, "transfer")
    assert transfer.find(f"{SVG}polygon") is not None and transfer.find(f"{SVG}rect") is None
    assert texts(transfer) == [label, "torch:cpu → jax:cpu"]
    assert title(transfer).splitlines()[-1] == f"moves {label.removeprefix('transfer ')} from torch:cpu by dlpack"


def test_tooltips_say_op_type_placement_module_source_and_reason() -> None:
    g, report = partition(model(), ["torch:cpu", "jax:cpu"])
    root = ET.fromstring(draw_svg(g, report))
    relu = with_class(root, "node")[1]
    assert title(relu).splitlines() == ["%1 = relu(%0) : f32[B, 4] on torch:cpu", "module: enc", "source: m.sp:3:9",
                                        "placement: torch:cpu, stage 0", "placed by: hint"]
    add = with_class(root, "node")[-1]
    assert title(add).splitlines()[1:] == ["module: (top level)", "placement: jax:cpu, stage 1", "placed by: cost"]
    assert title(with_class(root, "input")[0]) == "%x: f32[B, 4]\ngraph input"


def test_hostile_names_are_escaped() -> None:
    """Module paths, source file names and graph names are user text; none may become markup."""
    g, report = partition(model(module=HOSTILE, file=HOSTILE), ["torch:cpu", "jax:cpu"])
    g.name = HOSTILE
    svg, page = draw_svg(g, report), draw_html(g, report)
    root = ET.fromstring(svg)  # an unescaped quote or '<' would not parse, or would make elements
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    relu = with_class(root, "node")[1]
    assert f"module: {HOSTILE}" in title(relu) and f"source: {HOSTILE}:3:9" in title(relu)
    assert texts(with_class(root, "title")[0]) == [HOSTILE]
    assert HOSTILE in [t for e in with_class(root, "module") for t in texts(e)]
    assert "<script" not in svg and "<script" not in page and "&lt;script&gt;" in page
    assert _stage_rows(page)[0][-1] == HOSTILE


def test_html_has_the_summary_the_stage_table_and_the_svg() -> None:
    g, report = partition(model(), ["torch:cpu", "jax:cpu"])
    page = draw_html(g, report, {"B": 2})
    assert page.startswith("<!DOCTYPE html>")
    assert f'<p class="summary">{report.summary(g, {"B": 2})}</p>' in page
    assert report.summary(g, {"B": 2}) == "3/5 nodes jax:cpu, 2 torch:cpu, 2 stages, 1 transfer, 32 B, zero-copy"
    assert _stage_rows(page) == [["0", "torch:cpu", "2", "", "enc"], ["1", "jax:cpu", "3", "32 B", "dec, (top level)"]]
    assert draw_svg(g, report, {"B": 2}).strip() in page
    assert not re.search(r"<script|<link|src=|https?://(?!www\.w3\.org/2000/svg)", page), "self-contained"


def test_an_unpartitioned_graph_draws_grey_in_one_stage() -> None:
    g = model()
    for n in g.nodes:
        n.placement = None
    root = ET.fromstring(draw_svg(g))
    legend = [e.get("data-placement") for e in with_class(root, "legend-item") if e.get("data-placement")]
    assert legend == ["unplaced"]
    assert {e.find(f"{SVG}rect").get("fill") for e in with_class(root, "node")} == {"#e3e5e8"}
    assert not with_class(root, "summary")
    page = draw_html(g)
    assert 'class="summary"' not in page
    assert _stage_rows(page) == [["0", "unplaced", "4", "", "enc, dec, (top level)"]]


def test_hints_are_grey_and_named_in_the_tooltip() -> None:
    root = ET.fromstring(draw_svg(model()))  # placements are still hints (torch, jax), not placements
    relu = with_class(root, "node")[1]
    assert relu.get("data-placement") == "unplaced" and "placement: unplaced (hint: torch), stage 0" in title(relu)


def test_an_empty_graph_draws() -> None:
    root = ET.fromstring(draw_svg(Graph("Empty")))
    assert not with_class(root, "node") and not with_class(root, "edge")
    assert _stage_rows(draw_html(Graph("Empty"))) == []


def test_layout_is_deterministic() -> None:
    """The same graph built twice (new objects, new ids) draws byte for byte the same."""
    first = partition(model(), ["torch:cpu", "jax:cpu", "tf:cpu"])
    second = partition(model(), ["torch:cpu", "jax:cpu", "tf:cpu"])
    assert draw_svg(*first) == draw_svg(*first) == draw_svg(*second)
    assert draw_html(*first) == draw_html(*second)


class _Rows(HTMLParser):
    """The text of each cell of each body row of the stage table."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None
        self.body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.body |= tag == "tbody"
        if self.body and tag == "tr":
            self.rows.append([])
        if self.body and tag == "td":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None:
            self.rows[-1].append("".join(self.cell))
            self.cell = None
        self.body &= tag != "tbody"

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def _stage_rows(page: str) -> list[list[str]]:
    parser = _Rows()
    parser.feed(page)
    return parser.rows
