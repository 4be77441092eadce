"""shipei fuzz: batches, isolated workers, minimized and saved findings, the summary."""

from __future__ import annotations

import numpy as np
import pytest
from shipei.frontend import elaborate_file, elaborate_source
from shipei.ir.init import init_params
from shipei.ir.interpreter import interpret

from shipei.cli import main
from shipei.testing import available_targets
from shipei.testing.fuzz import Case, Fuzzer, Summary, Worker, join
from shipei.testing.lowering import reference, sample_inputs
from shipei.testing.strategies import generate, make_space

SMALL_OPS = ["add", "mul", "relu", "neg", "exp", "tanh", "reduce_sum", "transpose"]


def cases(n: int) -> list[Case]:
    space = make_space(max_nodes=6, min_nodes=3)
    out = []
    for seed in range(n):
        g = generate(seed, space)
        w = init_params(g, 0)
        xs, ref = sample_inputs(g, seed, w)
        out.append(Case(seed, g, list(xs), w, ref))
    return out


def test_a_batch_computes_what_its_graphs_compute():
    batch = [c for c in cases(12) if not any(n.op == "pad" and not n.operands[0].type.rank for n in c.graph.nodes)]
    union, inputs, weights, slots = join(batch)
    got = interpret(union, inputs, weights)
    want = {(k, j): out for k, c in enumerate(batch) for j, out in enumerate(interpret(c.graph, c.inputs, c.weights))}
    assert len(got) == len(slots) == len(want)
    for (k, j), array in zip(slots, got):
        np.testing.assert_array_equal(array, want[k, j])
    assert [c.graph.nodes[0].operands for c in batch[:1]] and batch[0].graph.inputs[0].name == "x0"  # not consumed


def test_smoke_every_available_target(tmp_path):
    summary = Fuzzer(available_targets(), seconds=1, batch=8, out=tmp_path, progress=None, shrink=False).run()
    assert summary.graphs >= 8 and set(summary.targets) == set(available_targets())
    # Each target runs the graphs its capability table covers (MindSpore has no bf16).
    assert max(s.graphs for s in summary.targets.values()) == summary.graphs
    assert all(s.graphs >= 1 for s in summary.targets.values())
    text = (tmp_path / "summary.txt").read_text()
    assert text.startswith("target") and "graphs/s" in text and "ops covered" in text


def test_a_broken_lowering_is_found_minimized_and_saved(tmp_path, capsys):
    code = main(["fuzz", "--targets", "torch", "--time", "2", "--batch", "8", "--out", str(tmp_path),
                 "--ops", ",".join(SMALL_OPS), "--inject", "torch:mul={0} + {1}"])
    assert code == 1
    table = capsys.readouterr().out
    assert "torch mismatch in mul" in table
    sp = next(tmp_path.glob("*-torch-mismatch-mul.sp"))
    graph = elaborate_file(sp)
    assert [n.op for n in graph.nodes] == ["mul"]
    saved = np.load(sp.with_suffix(".npz"))
    assert sorted(saved.files) == sorted(v.name for v in graph.inputs)
    replay = next(line for line in sp.with_suffix(".txt").read_text().splitlines() if line.startswith("replay: "))
    argv = replay.removeprefix("replay: shipei ").split()
    assert argv[:2] == ["run", str(sp)]
    assert main(argv) == 0  # the real mul is right: the replay passes without the injected rule


LINEAR = """\
model Linear() {
    forward(x: f32[3, 4], w: f32[2, 4], b: f32[2]) -> f32[3, 2] {
        return x @ transpose(w, [1, 0]) + b
    }
}
"""


@pytest.mark.parametrize("opt", [0, 2])
def test_a_worker_at_an_opt_level_lowers_the_optimized_graph(tmp_path, opt):
    """Only -O2's recognize makes a `linear`, so only then does a broken linear rule show."""
    worker = Worker("torch", "cpu", "torch:linear={0} @ {1}.T", tmp_path, opt=opt)  # drops the bias
    g = elaborate_source(LINEAR)
    inputs = [np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    try:
        got = worker.run(g, inputs, {}, timeout=60).outputs[0]
    finally:
        worker.stop()
    assert np.allclose(got, interpret(g, inputs, {})[0], rtol=1e-5) == (opt == 0)


def test_at_o3_the_replay_and_the_summary_say_the_level(tmp_path, capsys):
    code = main(["fuzz", "--targets", "torch", "--time", "2", "--batch", "8", "--out", str(tmp_path), "-O3",
                 "--ops", ",".join(SMALL_OPS), "--inject", "torch:mul={0} + {1}"])
    assert code == 1 and "torch mismatch in mul" in capsys.readouterr().out
    sp = next(tmp_path.glob("*-torch-mismatch-mul-O3.sp"))
    replay = next(line for line in sp.with_suffix(".txt").read_text().splitlines() if line.startswith("replay: "))
    assert replay.endswith(" -O3 --freeze")
    assert " graphs at -O3 in " in (tmp_path / "summary.txt").read_text()
    assert main(replay.removeprefix("replay: shipei ").split()) == 0


RSQRT_NORM = """\
model G() {
    forward(x2: f16[3], x4: f16[3]) -> (f16[3]) {
        v0 = rsqrt(x2)
        return layer_norm(v0, v0, x4, eps=1e-05)
    }
}
"""


def test_a_jax_mismatch_that_xla_s_default_optimizations_do_not_show_is_not_counted(tmp_path):
    """Found by `shipei fuzz -O3 --seed 81`: XLA without its LLVM optimizations computes rsqrt(0.7085)
    as 1.1875 (1.18848 rounded right), which the layer norm amplifies past tolerance. As `shipei run`
    compiles it, it passes; so it is saved, but not counted as a finding."""
    graph = elaborate_source(RSQRT_NORM)
    inputs = [np.array([1.1171875, 0.70849609375, 1.3701171875], np.float16),
              np.array([0.79296875, 0.74658203125, -0.107421875], np.float16)]
    fuzzer = Fuzzer(["jax"], out=tmp_path, progress=None, shrink=False)
    try:
        failure = fuzzer.probe("jax")(graph, inputs, {})
        assert failure is not None and failure.kind == "mismatch"  # in the fast fuzzing worker
        fuzzer.record("jax", Case(81, graph, inputs, {}, reference(graph, inputs, {})), failure)
    finally:
        for worker in [*fuzzer.workers.values(), *fuzzer.deployed.values()]:
            worker.stop()
    assert fuzzer.findings == [] and [f.op for f in fuzzer.not_counted] == ["layer_norm"]
    assert "not counted: it passes with XLA's default optimizations" in fuzzer.not_counted[0].path.with_suffix(
        ".txt").read_text()
    summary = Summary(fuzzer.stats, fuzzer.ops, fuzzer.findings, 1.0, 1, 0, not_counted=fuzzer.not_counted)
    assert "no findings" in summary.table() and "not counted: jax mismatch in layer_norm" in summary.table()


def test_a_broken_jax_lowering_still_counts_after_the_deployed_replay(tmp_path, capsys):
    code = main(["fuzz", "--targets", "jax", "--time", "2", "--batch", "8", "--out", str(tmp_path),
                 "--ops", ",".join(SMALL_OPS), "--inject", "jax:mul={0} + {1}"])
    assert code == 1 and "jax mismatch in mul" in capsys.readouterr().out


def test_a_crashing_framework_is_a_finding_and_the_worker_comes_back(tmp_path):
    fuzzer = Fuzzer(["torch"], seconds=1, batch=2, max_nodes=2, out=tmp_path, progress=None, ops=["relu", "neg"],
                    inject="torch:relu=__import__('os')._exit(3) or {0}")
    summary = fuzzer.run()
    assert summary.targets["torch"].counts["crash"] >= 1
    crash = next(f for f in summary.findings if f.kind == "crash")
    assert crash.op == "relu" and "exited with status 3" in crash.description
    assert [n.op for n in elaborate_file(crash.path).nodes] == ["relu"]
    assert summary.targets["torch"].graphs >= 2


def test_a_hanging_worker_times_out_and_is_restarted(tmp_path):
    worker = Worker("torch", "cpu", "torch:neg=__import__('time').sleep(60) or {0}", tmp_path)
    g = generate(0, make_space(ops=["neg"], max_nodes=1))
    inputs = sample_inputs(g, 0, {})[0]
    try:
        assert worker.run(g, inputs, {}, timeout=1.0).kind == "timeout"
        g2 = generate(0, make_space(ops=["abs"], max_nodes=1))
        reply = worker.run(g2, sample_inputs(g2, 0, {})[0], {}, timeout=60.0)
        assert reply.kind == "" and len(reply.outputs) == 1
    finally:
        worker.stop()


def test_unknown_and_unavailable_targets_are_errors(capsys):
    assert main(["fuzz", "--targets", "nope", "--time", "1"]) == 1
    assert "unknown target 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["--time", "--seed"])
def test_fuzz_options_are_validated(bad, capsys):
    with pytest.raises(SystemExit):
        main(["fuzz", bad, "x"])
