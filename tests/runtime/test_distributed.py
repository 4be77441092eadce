"""Pipeline stages on Ray actors, on a real local Ray instance: the result equals the reference and
the in-process pipeline's, micro-batched or not, as plain actors or a compiled graph; a stage whose
actor is killed in the middle of a call is restarted and the call completes; once restarts are
spent, or when a stage hangs, the call stops with an error naming the stage, never a hang."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import ray
from shipei.ir.tolerance import compare

import shipei
from shipei import RayOptions, ShipeiError

pytestmark = pytest.mark.xdist_group("ray")  # one Ray instance per test process
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: The transformer over two frameworks: wte and wpe on jax, h.0 on torch, the rest on jax again.
SPLIT = {"h.0": "torch:cpu", "*": "jax:cpu"}
TOKENS = np.random.default_rng(0).integers(0, 512, (8, 16))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    gc.collect()  # what the tests left for the collector (errors, their tracebacks) goes while Ray runs
    ray.shutdown()


@pytest.fixture(scope="module")
def transformer() -> shipei.CompiledPipeline:
    return shipei.compile(EXAMPLES / "transformer.sp", device_map=SPLIT)


def _assert_reference(compiled: shipei.CompiledPipeline, got: np.ndarray) -> None:
    _assert_reference_at(compiled, TOKENS, got)


def _assert_reference_at(compiled: shipei.CompiledPipeline, tokens: np.ndarray, got: np.ndarray) -> None:
    want = shipei.reference(compiled.ir, [tokens], compiled.weights)[0]
    worst = compare(got, want, compiled.ir.outputs[0].dtype)
    assert worst.ok, worst


@contextmanager
def on_ray(compiled: shipei.CompiledPipeline, **options):
    """`compiled` loaded on Ray actors with `RayOptions(**options)`, closed afterwards."""
    exe = compiled.load(ray=RayOptions(**options))
    try:
        yield exe
    finally:
        exe.close()


def _pid(exe, stage: int) -> int:
    return ray.get(exe.actors[stage].describe.remote())[3]


def _folders(exe) -> list[Path]:
    """Each stage's folder, as its actor says."""
    return [Path(ray.get(actor.__ray_call__.remote(lambda stage: str(stage.folder)))) for actor in exe.actors]


@pytest.mark.parametrize("compiled_graph", [False, True], ids=["actors", "compiled-graph"])
def test_stages_on_ray_actors_compute_what_the_in_process_pipeline_does(local_ray, transformer, compiled_graph) -> None:
    in_process = transformer.load()  # pinned, one thread per stage, as the actors run
    exe = transformer.load(ray=RayOptions(compiled=compiled_graph))
    try:
        assert [p.split(" ")[0] for p in exe.placements] == ["jax:cpu", "torch:cpu", "jax:cpu"]
        assert len(set(exe.pids)) == 3 and os.getpid() not in exe.pids  # a process per stage
        _assert_reference(transformer, exe(TOKENS))
        pipelined = exe(TOKENS, micro_batches=4)
        _assert_reference(transformer, pipelined)
        np.testing.assert_array_equal(pipelined, in_process(TOKENS, micro_batches=4))  # the same programs
        # 4 micro-batches, each crossing jax -> torch -> jax once: [2, 16, 128] f32, 16 KiB a hop
        assert [(t.source, t.destination, t.bytes) for t in exe.transfers] == [(0, 1, 16384), (1, 2, 16384)] * 4
        sixteen = np.tile(TOKENS[:, :4], (2, 1))  # more micro-batches than a compiled graph holds in flight
        _assert_reference_at(transformer, sixteen, exe(sixteen, micro_batches=16))
    finally:
        exe.close()
        in_process.close()


def test_a_stage_killed_in_the_middle_of_a_call_is_restarted_and_the_call_completes(local_ray, transformer) -> None:
    with on_ray(transformer, max_restarts=1, timeout=120) as exe:
        victim = exe.pids[1]
        os.kill(victim, signal.SIGSTOP)  # stage 1 holds its calls, so they are in flight when it dies
        result: list = []
        call = threading.Thread(target=lambda: result.append(exe(TOKENS, micro_batches=4)))
        call.start()
        time.sleep(1.0)
        assert call.is_alive() and not result
        os.kill(victim, signal.SIGKILL)
        call.join(120)
        assert not call.is_alive() and len(result) == 1
        _assert_reference(transformer, result[0])
        assert _pid(exe, 1) != victim


def test_once_restarts_are_spent_the_call_stops_naming_the_stage(local_ray, transformer) -> None:
    with on_ray(transformer, max_restarts=0, timeout=120) as exe:
        folders = _folders(exe)
        os.kill(exe.pids[1], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(ShipeiError, match=r"stage 1 \(torch:cpu\) failed: its Ray actor died"):
            exe(TOKENS, micro_batches=2)
        assert time.monotonic() - start < 60
    assert not any(folder.exists() for folder in folders)  # the dead stage's too: on this machine, close removes it


def test_a_hung_stage_times_out_naming_it_and_the_next_call_runs(local_ray, transformer) -> None:
    """`timeout` for a call at shapes the stages have run; the load timeout for one at new shapes,
    which compile (jax's XLA, torch's traced graph), and so for a restarted stage's first call."""
    with on_ray(transformer, max_restarts=1, timeout=2) as exe:
        _assert_reference(transformer, exe(TOKENS))  # its first call compiles every stage at [8, 16]
        stalled = exe.pids[1]
        os.kill(stalled, signal.SIGSTOP)
        threading.Timer(4.0, os.kill, (stalled, signal.SIGCONT)).start()
        start = time.monotonic()
        _assert_reference(transformer, exe(TOKENS, micro_batches=2))  # new shapes, [4, 16]: waited for
        assert time.monotonic() - start >= 4.0
        os.kill(stalled, signal.SIGSTOP)
        with pytest.raises(ShipeiError, match=r"stage 1 \(torch:cpu\) did not answer within 2 s"):
            exe(TOKENS)  # shapes it has run
        _assert_reference(transformer, exe(TOKENS))  # waits for the restarted stage to load, then runs
        assert exe.pids[1] != stalled


def test_closing_the_pipeline_removes_its_stages_files(local_ray, transformer) -> None:
    with on_ray(transformer) as exe:
        folders = _folders(exe)
        assert all((folder / "gpt_pipeline.py").is_file() for folder in folders)
    assert not any(folder.exists() for folder in folders)  # Ray's kill runs no clean-up in an actor: close does


def test_a_cluster_too_small_for_the_stages_is_an_error_before_any_actor_starts(local_ray) -> None:
    alternating = {"wte": "torch:cpu", "wpe": "torch:cpu", "h.0": "jax:cpu", "h.1": "torch:cpu", "ln_f": "jax:cpu",
                   "*": "torch:cpu"}
    compiled = shipei.compile(EXAMPLES / "transformer.sp", device_map=alternating)
    assert len(compiled.plan.stages) == 5
    with pytest.raises(ShipeiError, match=r"cannot hold the 5 stages: they need 5 CPU \(it has 4\)"):
        compiled.load(ray=True)


def test_stages_that_would_wait_for_cpus_other_actors_hold_are_an_error_now(local_ray, transformer) -> None:
    with on_ray(transformer):  # 3 of the 4 CPUs
        with pytest.raises(ShipeiError, match=r"cannot start the 3 stages now: they need 3 CPU \(1 free of 4\)"):
            transformer.load(ray=True)


def test_shipei_run_ray_runs_the_stages_on_a_local_instance_and_checks_them(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "shipei", "run", str(EXAMPLES / "mlp.sp"), "--device-map",
                             '{"fc1": "torch:cpu", "*": "jax:cpu"}', "--dim", "B=8", "--micro-batches", "2", "--ray",
                             "--check"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SHIPEI_SCRATCH": str(tmp_path)})  # where its stages write
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MLP in 2 stages on Ray actors: torch:cpu (cpu) pid " in result.stdout
    assert "check output 0: max error" in result.stdout and "MISMATCH" not in result.stdout
    assert not list(tmp_path.glob("shipei-stage*"))  # the command closed the pipeline: each stage removed its own


def test_shipei_bench_ray_times_the_pipeline_on_actors(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "shipei", "bench", str(EXAMPLES / "mlp.sp"), "--device-map",
                             '{"fc1": "torch:cpu", "*": "jax:cpu"}', "--dim", "B=8", "--micro-batches", "2", "--ray",
                             "--rounds", "2"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TMPDIR": str(tmp_path), "RAY_TMPDIR": "/tmp"})  # short socket paths
    assert result.returncode == 0, result.stdout + result.stderr  # bench prints a failed entry's error in stdout
    assert not list(tmp_path.glob("shipei-*"))  # its killed worker's stages wrote into its folder, now gone
    row = next(line for line in result.stdout.splitlines() if line.startswith("| pipeline on Ray |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("torch:cpu (cpu) pid ") and " + jax:cpu (cpu) pid " in cells[1] and cells[2] == "8"
    assert float(cells[3].replace(",", "")) > 0 and cells[8:11] == ["-", "-", "-"]  # memory: in the actors
    assert "deploy on pipeline on Ray" in result.stdout
