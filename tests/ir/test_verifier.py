"""The verifier accepts valid graphs and names the first violation of each rule, with the node."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from graphs import B, mlp, sample_graph, sample_graphs, t
from shipei.ir.errors import ShipeiError, SourceLoc
from shipei.ir.graph import Graph, Init, ParamInfo
from shipei.ir.registry import all_ops
from shipei.ir.verifier import verify


@pytest.mark.parametrize("op", sorted(all_ops()))
def test_valid_graphs_verify(op: str) -> None:
    for graph in sample_graphs(op):
        verify(graph)


def test_mlp_verifies() -> None:
    verify(mlp())


# mlp() nodes: 0 transpose, 1 matmul, 2 add, 3 relu, 4 dropout, 5 transpose, 6 matmul, 7 mul, 8 softmax
MUTATIONS: list[tuple[str, Callable[[Graph], object], str]] = [
    # names, inputs and params
    ("graph name", lambda g: setattr(g, "name", "my model"), "graph name 'my model' is not an identifier"),
    ("input name", lambda g: setattr(g.inputs[0], "name", "0x"), "input name '0x' is not an identifier"),
    ("param name", lambda g: setattr(g.params[0], "name", None), "param name None is not an identifier"),
    ("same names", lambda g: setattr(g.params[1], "name", "x"), "%x is defined twice"),
    ("same value", lambda g: g.params.append(g.params[0]), "%fc1.weight is defined twice"),
    ("input as param", lambda g: setattr(g.inputs[0], "param", g.params[0].param), "input %x is marked as a param"),
    ("input produced", lambda g: setattr(g.inputs[0], "producer", g.nodes[0]), "input %x has a producer node"),
    ("no param info", lambda g: setattr(g.params[0], "param", None), "param %fc1.weight has no ParamInfo"),
    ("symbolic param", lambda g: setattr(g.params[1], "type", t("f32", B)),
     "param %fc1.bias has a symbolic shape f32[B]"),
    ("unknown init", lambda g: setattr(g.params[1], "param", ParamInfo(Init("zero"))),
     "param %fc1.bias: unknown initializer 'zero'"),
    ("init argument", lambda g: setattr(g.params[1], "param", ParamInfo(Init("full", (("val", 1.0),)))),
     "initializer 'full' has no argument 'val'"),
    ("init literal", lambda g: setattr(g.params[1], "param", ParamInfo(Init("full", (("value", np.float32(1)),)))),
     "initializer argument value=np.float32(1.0) is not an int, float or bool"),
    # ops and operands
    ("unknown op", lambda g: setattr(g.nodes[3], "op", "relu6"), "node 3 (relu6): unknown op 'relu6'"),
    ("used before defined", lambda g: g.nodes[1].operands.__setitem__(1, g.nodes[5].result),
     "node 1 (matmul): operand 1 is used before it is defined (it is defined only later, by node 5)"),
    ("nodes out of order", lambda g: g.nodes.insert(0, g.nodes.pop(1)),
     "node 0 (matmul): operand 1 is used before it is defined (it is defined only later, by node 1)"),
    ("foreign operand", lambda g: g.nodes[3].operands.__setitem__(0, mlp().nodes[2].result),
     "node 3 (relu): operand 0 is used before it is defined (it is defined outside this graph)"),
    # attributes
    ("missing attr", lambda g: g.nodes[0].attrs.pop("perm"), "node 0 (transpose): transpose needs attribute 'perm'"),
    ("missing default", lambda g: g.nodes[8].attrs.pop("axis"), "node 8 (softmax): attribute 'axis' is missing"),
    ("unknown attr", lambda g: g.nodes[8].attrs.update(dim=1), "softmax has no attribute 'dim'"),
    ("attr kind", lambda g: g.nodes[8].attrs.update(axis="last"), "attribute 'axis' must be int, got 'last'"),
    ("list attr", lambda g: g.nodes[0].attrs.update(perm=[1, 0]),
     "attribute 'perm' is [1, 0], not in its canonical form (1, 0)"),
    ("numpy attr", lambda g: g.nodes[8].attrs.update(axis=np.int64(-1)),
     "attribute 'axis' is np.int64(-1), not in its canonical form -1"),
    # types and results
    ("type rule", lambda g: g.nodes[2].operands.__setitem__(1, g.inputs[0]),
     "node 2 (add): its type rule fails: shapes"),
    ("result type", lambda g: setattr(g.nodes[3].result, "type", t("f32", B, 255)),
     "node 3 (relu): result 0 has type f32[B, 255], but the op gives f32[B, 256]"),
    ("producer", lambda g: setattr(g.nodes[3].result, "producer", g.nodes[2]),
     "node 3 (relu): result 0 does not point back at this node"),
    ("index", lambda g: setattr(g.nodes[3].result, "index", 1), "node 3 (relu): result 0 does not point back"),
    ("node twice", lambda g: g.nodes.append(g.nodes[3]), "node 9 (relu): result 0 is already defined"),
    ("placement", lambda g: setattr(g.nodes[4], "placement", "cuda:0"),
     "node 4 (dropout): placement 'cuda:0' is not a Placement"),
    ("output", lambda g: setattr(g, "outputs", mlp().outputs), "output 0 of graph MLP is not defined in it"),
]


@pytest.mark.parametrize("mutate, message", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_violation_is_named(mutate: Callable[[Graph], object], message: str) -> None:
    g = mlp()
    mutate(g)
    with pytest.raises(ShipeiError) as info:
        verify(g)
    assert message in info.value.message


def test_result_count() -> None:
    g = sample_graph("split")
    g.nodes[0].results.pop()
    with pytest.raises(ShipeiError, match="node 0 \\(split\\): it has 2 results, but the op gives 3"):
        verify(g)


def test_array_attribute_of_a_dtype_shipei_lacks() -> None:
    g = sample_graph("constant")
    g.nodes[0].attrs["value"] = np.array([1j])
    with pytest.raises(ShipeiError, match="attribute 'value': numpy dtype complex128 has no shipei equivalent"):
        verify(g)


def test_node_errors_show_the_printed_node_at_its_loc() -> None:
    g = mlp()
    loc = SourceLoc("mlp.sp", 5, 13, "        h = relu(fc1(x))")
    g.nodes[3].loc = loc
    g.nodes[3].operands[0] = mlp().nodes[2].result
    with pytest.raises(ShipeiError) as info:
        verify(g)
    assert info.value.loc == loc
    assert info.value.message == ("node 3 (relu): operand 0 is used before it is defined (it is defined outside "
                                  "this graph)\n    %3 = relu(%?) : f32[B, 256]")
