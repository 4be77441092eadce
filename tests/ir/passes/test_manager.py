"""The pass manager and the -O pipelines: every pass registered, dumps and timings, and every
example model at -O3 agreeing with the reference on every installed target."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from pass_testing import assert_preserves
from shipei.codegen import target_info
from shipei.codegen.prepare import prepare
from shipei.ir.errors import ShipeiError
from shipei.ir.graph import Graph
from shipei.ir.init import init_params
from shipei.ir.inputs import random_inputs
from shipei.ir.interpreter import interpret
from shipei.ir.parser import parse_ir
from shipei.ir.passes.context import PassSettings
from shipei.ir.passes.manager import PASSES, PIPELINES, PassContext, get_pass, pipeline, run_passes
from shipei.ir.passes.rewrite import clone
from shipei.ir.tolerance import compare

import shipei
from shipei.testing import available_targets, graphs
from shipei.testing.lowering import run_target

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DIMS = {"B": 2, "T": 8}


@pytest.mark.parametrize("name", sorted(PASSES))
def test_every_pass_is_named_after_its_module(name: str) -> None:
    module, cls = PASSES[name]
    assert module == name.replace("-", "_") and get_pass(name).name == name
    assert cls.lower() == module.replace("_", "")


def test_pipelines_grow_with_the_level() -> None:
    assert PIPELINES[0] == [] and PIPELINES[1] == ["canonicalize", "fold-constants", "dce"]
    assert set(PIPELINES[1]) < set(PIPELINES[2]) < set(PIPELINES[3])
    assert {"fuse", "plan-memory", "layout"} <= set(PIPELINES[3]) - set(PIPELINES[2])
    assert "quantize" not in PIPELINES[3] and "prune" not in PIPELINES[3]
    assert pipeline(3, disabled=["fuse"]) == [p for p in PIPELINES[3] if p != "fuse"]
    with pytest.raises(ShipeiError, match="unknown pass 'fuze'") as err:
        pipeline(3, disabled=["fuze"])
    assert err.value.hint == "did you mean 'fuse'?"


def test_print_after_and_time_passes() -> None:
    out = io.StringIO()
    graph = parse_ir("""graph @G(%x: f32[B]) -> (f32[B]) {
      %0 = neg(%x) : f32[B]
      %1 = neg(%0) : f32[B]
      return %1
    }""")
    ctx = PassContext(print_after={"simplify"}, time_passes=True, out=out)
    run_passes(graph, ["simplify", "dce"], ctx)
    lines = out.getvalue().splitlines()
    assert lines[:5] == ["// -----// IR after simplify //----- //", "graph @G(%x: f32[B]) -> (f32[B]) {",
                         "  %0 = neg(%x) : f32[B]", "  return %x", "}"]
    assert [line.split()[0] for line in lines[5:]] == ["pass", "simplify", "dce", "total"]
    assert lines[6].endswith("2 -> 1") and lines[7].endswith("1 -> 0")
    assert [t.name for t in ctx.timings] == ["simplify", "dce"]


def _example_graphs() -> list[tuple[str, Graph]]:
    return [(f, shipei.parse(EXAMPLES / f)) for f in ("mlp.sp", "cnn.sp", "transformer.sp")]


@pytest.mark.parametrize("frozen", [False, True], ids=["weights-as-inputs", "frozen"])
@pytest.mark.parametrize("level", [1, 2, 3])
def test_examples_keep_their_meaning_at_every_level(level: int, frozen: bool) -> None:
    for name, graph in _example_graphs():
        weights = init_params(graph)
        ctx = PassContext(weights=dict(weights), frozen=frozen, settings=PassSettings(dims=DIMS))
        optimized = run_passes(clone(graph), pipeline(level), ctx)
        x = random_inputs(graph, seed=1, dims=DIMS)
        for want, got in zip(interpret(graph, x, weights), interpret(optimized, x, ctx.weights)):
            assert compare(got, want, graph.outputs[0].dtype).ok, name
        per_call = prepare(optimized).nodes  # less what the program computes from its weights at load
        assert len(per_call) <= len(graph.nodes)
        if level == 3:
            assert ctx.results.memory_plan.ratio <= 0.6, name


@pytest.mark.parametrize("target", available_targets())
def test_examples_at_o3_agree_with_the_reference_on_every_target(target: str) -> None:
    for name, graph in _example_graphs():
        weights = init_params(graph)
        ctx = PassContext(weights=dict(weights), frozen=True, settings=PassSettings(dims=DIMS),
                          target=target_info(target))
        optimized = run_passes(clone(graph), pipeline(3), ctx)
        x = random_inputs(graph, seed=1, dims=DIMS)
        got = run_target(optimized, target, x, ctx.weights, planned=True)
        want = interpret(graph, x, weights, "f64")
        for g, w in zip(got, want):
            assert np.asarray(g).shape == w.shape
            assert compare(g, w, graph.outputs[0].dtype).ok, f"{name} on {target}"


@given(graphs(max_nodes=10))
def test_o3_preserves_meaning(graph) -> None:
    assert_preserves(graph, pipeline(3))


def test_compile_runs_the_pipeline_and_keeps_the_callers_graph() -> None:
    graph = shipei.parse(EXAMPLES / "cnn.sp")
    before = str(graph)
    compiled = shipei.compile(graph, "torch", opt=3, freeze=True, pass_options={"dims": {"B": 8}})
    assert str(graph) == before and "batch_norm" not in str(compiled.ir) and "group 0 {" in str(compiled.ir)
    assert set(compiled.weights) == {p.name for p in compiled.ir.params}
    assert compiled.passes.results.memory_plan.dims == {"B": 8}
    x = random_inputs(graph, seed=2, dims={"B": 2})
    want = shipei.reference(graph, x)[0]
    assert compare(compiled.load(device="cpu").run(*x)[0], want, graph.outputs[0].dtype).ok
    unfrozen = shipei.compile(graph, "torch", opt=3)
    assert [p.name for p in unfrozen.ir.params] == [p.name for p in graph.params]  # state_dicts still load


def test_compile_takes_explicit_passes_and_disabled_ones() -> None:
    graph = shipei.parse(EXAMPLES / "mlp.sp")
    assert "group" not in str(shipei.compile(graph, "torch", opt=3, disable=["fuse"]).ir)
    only = shipei.compile(graph, "torch", passes=["fuse", "plan-memory"])
    assert [t.name for t in only.passes.timings] == ["fuse", "plan-memory"]


def test_cli_optimization_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from shipei.cli import main

    mlp = str(EXAMPLES / "mlp.sp")
    assert main(["ir", mlp, "--opt", "3", "--freeze", "--time-passes", "--print-after", "fuse"]) == 0
    out, err = capsys.readouterr()
    assert "  group 0 {\n    %0 = linear(%x, %fc1.weight, %fc1.bias)" in out
    assert "// -----// IR after fuse //----- //" in err and err.count("IR after") == 1 and "plan-memory" in err
    assert main(["ir", mlp, "--passes", "simplify,cse", "--print-after-all"]) == 0
    assert capsys.readouterr().err.count("IR after") == 2
    assert main(["run", mlp, "-O3", "--freeze", "--disable-pass", "fuse", "--check"]) == 0
    assert " ok" in capsys.readouterr().out
    assert main(["ir", mlp, "-O2", "--disable-pass", "fold-bn"]) == 1
    assert "unknown pass 'fold-bn'" in capsys.readouterr().err


def test_printing_after_a_pass_that_does_not_run_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """--print-after of a misspelt pass, or of one the pipeline does not run, printed nothing and
    said nothing."""
    from shipei.cli import main

    mlp = str(EXAMPLES / "mlp.sp")
    assert main(["ir", mlp, "--print-after", "fuze"]) == 1
    err = capsys.readouterr().err
    assert "unknown pass 'fuze'" in err and "did you mean 'fuse'?" in err
    assert main(["ir", mlp, "--print-after", "fuse", "--print-after", "cse"]) == 0
    err = capsys.readouterr().err
    assert err.count("IR after") == 1 and "IR after cse" in err
    assert "note: nothing printed after fuse: not among the passes run (canonicalize," in err
    assert main(["ir", mlp, "-O0", "--print-after", "cse"]) == 0
    assert "note: nothing printed after cse: not among the passes run (none)" in capsys.readouterr().err
    assert main(["ir", mlp, "--print-after", "all"]) == 0  # LLVM's spelling of --print-after-all
    assert capsys.readouterr().err.count("IR after") == 8


@pytest.mark.parametrize("name", sorted(PASSES))
def test_a_pass_reads_exactly_the_settings_that_name_it(name: str) -> None:
    """A setting that names a pass it is not read by would be accepted from the user and ignored."""
    import dataclasses
    import re

    module, _ = PASSES[name]
    source = (Path(shipei.__file__).parents[1] / "ir" / "passes" / f"{module}.py").read_text()
    read = set(re.findall(r"ctx\.settings\.(\w+)", source))
    assert read == {f.name for f in dataclasses.fields(PassSettings) if name in f.metadata["pass"].split(" and ")}


def test_pass_options_are_checked_by_name_and_kind() -> None:
    graph = shipei.parse(EXAMPLES / "mlp.sp")
    with pytest.raises(ShipeiError, match="unknown pass option 'sparsty'") as e:
        shipei.compile(graph, "torch", pass_options={"sparsty": 0.5})
    assert e.value.hint == "did you mean 'sparsity'?"
    with pytest.raises(ShipeiError, match="unknown pass option 'target'"):
        shipei.compile(graph, "torch", pass_options={"target": "jax"})  # compile's to set, not the user's
    with pytest.raises(ShipeiError, match="pass option 'sparsity' expects a float, got 'half'") as e:
        shipei.compile(graph, "torch", pass_options={"sparsity": "half"})
    assert e.value.hint.startswith("prune reads sparsity: fraction of weights")
    with pytest.raises(ShipeiError, match="pass option 'structured' expects true or false, got 1"):
        shipei.compile(graph, "torch", pass_options={"structured": 1})
    with pytest.raises(ShipeiError, match="pass option 'max_group_size' expects an int, got 2.5"):
        shipei.compile(graph, "torch", pass_options={"max_group_size": 2.5})
    fused = shipei.compile(graph, "torch", opt=3, pass_options={"max_group_size": 1})
    assert not fused.ir.groups()  # read: groups of one node are left ungrouped


@pytest.mark.parametrize("name", [n for n in sorted(PASSES) if get_pass(n).frozen_only])
def test_naming_a_weight_pass_without_frozen_weights_is_an_error(name: str) -> None:
    graph = shipei.parse(EXAMPLES / "cnn.sp")
    with pytest.raises(ShipeiError, match=f"pass '{name}' rewrites the weights, which are not frozen") as e:
        shipei.compile(graph, "torch", passes=[name])
    assert "--freeze" in e.value.hint
    assert [t.name for t in shipei.compile(graph, "torch", passes=[name], freeze=True).passes.timings] == [name]
    leveled = shipei.compile(graph, "torch", opt=3)  # a level's pipeline runs it, and it does nothing
    assert [p.name for p in leveled.ir.params] == [p.name for p in graph.params]


def test_the_weight_passes_are_frozen_only() -> None:
    assert {n for n in PASSES if get_pass(n).frozen_only} == {"freeze", "quantize", "prune"}
