"""Running a partitioned model's stages on Ray: one actor per stage, micro-batches through the
object store (GPipe's schedule, forward only), numpy in and numpy out.

Each actor holds one stage of the generated driver (`Stage`, as the in-process runtime does), made
from the files it needs, sent with the actor (so that it can start on any machine of a cluster):
the driver, the stage's program and its weights. It asks Ray for what its placement runs on
(a GPU, a custom `TPU` or `NPU` resource, or one CPU), pins itself to its core on a CPU and runs
its framework there with one intra-op thread. The driver process submits every micro-batch to
every stage at once; Ray runs an actor's calls in the order they were submitted and starts one
once its inputs exist, so stage k works on micro-batch m while stage k+1 works on m-1. Arrays
cross as numpy: an actor on the same node reads them from the object store without a copy.

With `compiled=True` the same actors run as a Ray compiled graph (`ray[cgraph]`): the schedule is
set up once and each call writes to shared-memory channels instead of submitting tasks.

Faults: an actor that dies is restarted by Ray up to `max_restarts` times, and the calls it had not
finished are sent again (stages hold no state between calls, so a retry computes the same);
past that, or for an error inside a stage, the call raises a `ShipeiError` naming the stage. A
call that does not finish within `timeout` seconds raises one naming the first stage that had not
answered, and that stage's actor is restarted so that the next call can run. A call at input
shapes the stages have not run since they started has `load_timeout` instead: a stage compiles
a program at a shape's first call (XLA, a traced graph), which a timeout meant to catch a hang
must not count.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..codegen.frameworks import require_package
from ..codegen.module import weights_filename
from ..ir.cost import nbytes
from ..ir.errors import ShipeiError
from ..ir.graph import Graph
from ..ir.interpreter import bind_symbols
from ..ir.pipeline import PipelinePlan
from .executable import import_module_file
from .indices import IndexCheck
from .pipeline import Pipelined, Transfer, load_stage, stage_core, warn_fallbacks
from .workers import scratch_folder

#: Seconds a call may take before the stage that has not answered counts as hung.
DEFAULT_TIMEOUT = 300.0
#: Seconds the stages may take to start and load (a framework's first import is the slow part).
DEFAULT_LOAD_TIMEOUT = 600.0
#: Seconds to wait for resources that other actors hold, before saying so.
FREE_WAIT = 10.0
#: Micro-batches in a compiled graph at once (Ray allows 10 by default).
IN_FLIGHT = 8
#: Seconds a failed call waits for its other tasks to fail too (see `_settle`).
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and how to treat its actors. `address`: a running cluster to join (as
    `ray start --head` prints it, or "auto" for the one on this machine), or None for a new local
    instance of `num_cpus` CPUs (default: this machine's, and one per stage at least);
    `max_restarts`: how often Ray restarts a stage's actor that died; `timeout`: seconds a call may
    take, `load_timeout` the stages' start and a call at shapes they have not run yet (which
    compiles them); `compiled`: run the actors as a Ray compiled graph."""

    address: str | None = None
    num_cpus: int | None = None
    max_restarts: int = 1
    timeout: float = DEFAULT_TIMEOUT
    load_timeout: float = DEFAULT_LOAD_TIMEOUT
    compiled: bool = False


def connect(options: RayOptions, stages: int = 1) -> Any:
    """Ray, connected: the running instance if this process has one, else the cluster at
    `options.address`, else a new local instance with a CPU per core, and at least one per stage
    (`stages`: stages beyond the cores share them, pinned, as in the in-process runtime)."""
    ray = require_package("ray", "ray", "--ray")  # with the same errors as a framework's import
    if not ray.is_initialized():
        try:
            if options.address is None:
                ray.init(address="local", num_cpus=options.num_cpus or max(os.cpu_count() or 1, stages),
                         include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            else:
                ray.init(address=options.address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {options.address}" if options.address else "a local Ray instance"
            raise ShipeiError(f"cannot start or join {where}: {e}",
                              hint="start one with `ray start --head`, then pass --ray-address with what it prints"
                              ) from None
    return ray


def _check_fits(ray: Any, placements: list[str]) -> None:
    """An error now, rather than actors that wait for ever, when the cluster lacks what the stages
    ask for, or other actors hold it."""
    needed: dict[str, float] = {}
    for placement in placements:
        asks = resources(placement)
        for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            needed[name] = needed.get(name, 0) + asks.get(key, 0)
        for name, count in asks.get("resources", {}).items():
            needed[name] = needed.get(name, 0) + count
    have = ray.cluster_resources()
    short = {name: count for name, count in needed.items() if count > have.get(name, 0)}
    if short:
        lacking = ", ".join(f"{count:g} {name} (it has {have.get(name, 0):g})" for name, count in short.items())
        raise ShipeiError(f"the Ray cluster cannot hold the {len(placements)} stages: they need {lacking}",
                          hint="add machines with `ray start --address ...`, or for a local instance pass more "
                               "CPUs (stages pinned to one core share it)")
    deadline = time.monotonic() + FREE_WAIT
    while True:  # actors just killed (a pipeline closed) give their resources back a moment later
        free = ray.available_resources()
        busy = {name: count for name, count in needed.items() if count > free.get(name, 0)}
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if busy:
        lacking = ", ".join(f"{count:g} {name} ({free.get(name, 0):g} free of {have.get(name, 0):g})"
                            for name, count in busy.items())
        raise ShipeiError(f"the Ray cluster cannot start the {len(placements)} stages now: they need {lacking}",
                          hint="other actors hold the rest: close() the pipelines you no longer use")


class FileStore:
    """The files each stage's actor is made from, where a restarted actor fetches them again. It is
    found by name: Ray warns that constructor arguments it holds in the object store (an actor
    handle among them) may be gone by a restart."""

    def __init__(self) -> None:
        self.files: dict[int, dict[str, bytes]] = {}

    def put(self, index: int, files: dict[str, bytes]) -> None:
        self.files[index] = files

    def get(self, index: int) -> dict[str, bytes]:
        return self.files[index]


class StageActor:
    """One stage in a process of its own (a Ray actor) of the pipeline `pipeline` (an id): written
    out from its `FileStore` (into `scratch` where given: `workers.scratch_folder`), pinned to its
    core on a CPU, loaded on its device."""

    def __init__(self, pipeline: str, driver: str, index: int, core: int | None, allow_fallback: bool,
                 scratch: str | None = None):
        import ray

        # one folder a stage: a restarted actor writes over its dead predecessor's files, not beside them
        self.folder = _stage_folder(scratch, pipeline, index)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        for name, data in ray.get(ray.get_actor(_store(pipeline)).get.remote(index)).items():
            (self.folder / name).write_bytes(data)
        cores = sorted(os.sched_getaffinity(0)) if core is not None and hasattr(os, "sched_getaffinity") else None
        # Ray shows the actor only the GPU it gave it (CUDA_VISIBLE_DEVICES), as cuda:0: a
        # placement's number (torch:cuda:3) is not honoured here, Ray picks the GPU
        self.stage = load_stage(import_module_file(self.folder / driver), index, allow_fallback,
                                {cores[core % len(cores)]} if cores else None, numbered=False)

    def describe(self) -> tuple[str, str, bool, int]:
        """(placement, device, fell back, process id)."""
        return self.stage.placement, self.stage.device, self.stage.fell_back, os.getpid()

    def step(self, *arrays: np.ndarray) -> Any:
        """Its results as numpy: one array, or a tuple of them when it has several."""
        outputs = self.stage.apply(*arrays)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def release(self) -> None:
        """Remove the stage's files, before the actor is killed (which runs no clean-up of its own):
        on a cluster, whose machines the driver cannot reach."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _stage_folder(scratch: str | None, pipeline: str, index: int) -> Path:
    """Where stage `index` of the pipeline `pipeline` writes its files: in `scratch`, else in the
    temporary folder of the process that asks."""
    return Path(scratch or tempfile.gettempdir()) / f"shipei-stage{index}-{pipeline}"


def _store(pipeline: str) -> str:
    """The name of the pipeline's `FileStore` actor."""
    return f"shipei-files-{pipeline}"


def resources(placement: str) -> dict[str, Any]:
    """What an actor for `placement` asks Ray for: a GPU, one unit of a custom TPU or NPU resource
    (declared by `ray start --resources`), or a CPU."""
    device = placement.split(":")[1]
    if device == "cuda":
        return {"num_cpus": 0, "num_gpus": 1}
    if device in ("tpu", "ascend"):
        return {"num_cpus": 0, "resources": {"TPU" if device == "tpu" else "NPU": 1}}
    return {"num_cpus": 1}


class RayPipelineExecutable(Pipelined):
    """A partitioned model whose stages run as Ray actors: call it with numpy arrays, as an
    `Executable`; `run(*inputs, micro_batches=k)` pipelines k micro-batches through the actors.
    `close()` (or the end of the process) ends the actors."""

    def __init__(self, graph: Graph, plan: PipelinePlan, driver_path: Path, weights: dict[str, np.ndarray],
                 allow_fallback: bool = False, *, check_indices: bool = True, options: RayOptions = RayOptions()):
        self.graph, self.plan, self.options = graph, plan, options
        self.driver = import_module_file(driver_path)
        ray = self._ray = connect(options, len(self.driver.STAGES))
        _check_fits(ray, [placement for _, placement in self.driver.STAGES])
        remote = ray.remote(StageActor)
        local = options.address is None  # a new instance on this machine: its stages share its cores
        scratch, pipeline = scratch_folder() if local else None, uuid.uuid4().hex
        # on this machine close removes the stages' folders, a dead or hung stage's too; on a
        # cluster each stage removes its own (`StageActor.release`)
        self._folders = [_stage_folder(scratch, pipeline, k) for k in range(len(self.driver.STAGES))] if local else None
        self._files = ray.remote(FileStore).options(num_cpus=0, name=_store(pipeline)).remote()
        ray.get([self._files.put.remote(k, {name: (driver_path.parent / name).read_bytes() for name in
                                            (driver_path.name, filename, weights_filename(plan.stages[k].graph.name))})
                 for k, (filename, _) in enumerate(self.driver.STAGES)])
        self.actors = []
        for k, (_, placement) in enumerate(self.driver.STAGES):
            actor = remote.options(**resources(placement), max_restarts=options.max_restarts,
                                   max_task_retries=options.max_restarts,
                                   ).remote(pipeline, driver_path.name, k,
                                            stage_core(placement, k) if local and ":cpu" in placement else None,
                                            allow_fallback, scratch)
            self.actors.append(actor)
        try:
            described = self._get([a.describe.remote() for a in self.actors], list(range(len(self.actors))),
                                  time.monotonic() + options.load_timeout, loading=True)
        except ShipeiError:
            self.close()
            raise
        self.placements = [f"{p} ({d}) pid {pid}" for p, d, _, pid in described]
        self.pids = [pid for *_, pid in described]
        warn_fallbacks([(k, p, fell) for k, (p, _, fell, _) in enumerate(described)])
        self.fell_back = any(fell for _, _, fell, _ in described)
        self._indices = IndexCheck.build(graph, weights) if check_indices else None
        self._dag = self._compile() if options.compiled else None
        self.transfers: list[Transfer] = []
        self._restarting: set[int] = set()  # stages killed after a timeout, loading again
        self._shapes: set[tuple] = set()  # the micro-batches' shapes every stage has run at since it started
        self._limit = options.timeout  # the running call's time limit

    # -- the schedule ---------------------------------------------------------------------------
    def _flow(self, parts: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        self._wait_restarted()
        shapes = {tuple((x.shape, x.dtype.str) for x in part) for part in parts}
        first = not shapes <= self._shapes  # a stage compiles at a shape's first call
        self._limit = max(self.options.timeout, self.options.load_timeout) if first else self.options.timeout
        deadline = time.monotonic() + self._limit
        outputs = (self._flow_compiled if self.options.compiled else self._flow_actors)(parts, deadline)
        self._shapes |= shapes
        return outputs

    def _flow_actors(self, parts: list[list[np.ndarray]], deadline: float) -> list[list[np.ndarray]]:
        """The micro-batches through the actors, all submitted at once; Ray runs each as soon as the
        results it reads are ready."""
        ray = self._ray
        submitted = []  # per micro-batch, its values: inputs and stage results as object refs
        for part in parts:
            values: dict[tuple, Any] = {("input", i): ray.put(x) for i, x in enumerate(part)}
            for k, actor in enumerate(self.actors):
                count = len(self.plan.stages[k].graph.outputs)
                refs = actor.step.options(num_returns=count).remote(*(values[r] for r in self.driver.READS[k]))
                values.update(((k, j), ref) for j, ref in enumerate(refs if count > 1 else [refs]))
            submitted.append(values)
        try:
            for k in range(len(self.actors)):  # stage by stage, so that a fault names the first stage it hit
                self._get([values[k, 0] for values in submitted], [k] * len(submitted), deadline)
            outputs = [self._get([values[r] for r in self.driver.OUTPUTS], [r[0] for r in self.driver.OUTPUTS],
                                 deadline) for values in submitted]
        except ShipeiError as e:
            error = e
        else:
            self.transfers = self._handoffs(parts)
            return outputs
        self._settle([ref for values in submitted for ref in values.values()])
        submitted = values = refs = None  # no object ref in this frame once it is in a traceback (see `_get`)
        raise error

    def _wait_restarted(self) -> None:
        """Wait (up to the load timeout) until the stages restarted after a timeout have loaded
        again, so that a call's time limit does not count their start."""
        if not self._restarting:
            return
        stages, self._restarting = sorted(self._restarting), set()
        described = self._get([self.actors[k].describe.remote() for k in stages], stages,
                              time.monotonic() + self.options.load_timeout, loading=True)
        for k, (placement, device, _, pid) in zip(stages, described):
            self.pids[k], self.placements[k] = pid, f"{placement} ({device}) pid {pid}"

    def _settle(self, refs: list) -> None:
        """Collect what a failed call's other tasks raise within a few seconds, so that Ray does not
        log each as an unhandled error; the error the caller sees names the stage."""
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=SETTLE_SECONDS)
        for ref in ready:
            try:
                self._ray.get(ref)
            except self._ray.exceptions.RayError:
                pass

    def _handoffs(self, parts: list[list[np.ndarray]]) -> list[Transfer]:
        """What crossed between the actors, by the declared shapes at each micro-batch's dims: every
        stage result another stage reads, a copy through the object store, not timed apart."""
        crossings = [(s, k, j) for k, reads in enumerate(self.driver.READS) for s, j in reads if s != "input"]
        out = []
        for part in parts:
            dims = bind_symbols(self.graph, part)
            out += [Transfer(s, k, int(nbytes(self.plan.stages[s].graph.outputs[j], dims)), True, None)
                    for s, k, j in crossings]
        return out

    def _compile(self) -> Any:
        """The actors' schedule as a Ray compiled graph: its inputs, then each stage on what it reads."""
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as given:
            values: dict[tuple, Any] = {("input", i): given[i] for i in range(len(self.graph.inputs))}
            for k, actor in enumerate(self.actors):
                count = len(self.plan.stages[k].graph.outputs)
                nodes = actor.step.options(num_returns=count).bind(*(values[r] for r in self.driver.READS[k]))
                values.update(((k, j), node) for j, node in enumerate(nodes if count > 1 else [nodes]))
            dag = MultiOutputNode([values[r] for r in self.driver.OUTPUTS])
        return dag.experimental_compile()

    def _flow_compiled(self, parts: list[list[np.ndarray]], deadline: float) -> list[list[np.ndarray]]:
        """The micro-batches through the compiled graph, all in flight at once; after a fault the
        graph is torn down and the next call compiles it again."""
        if self._dag is None:
            self._dag = self._compile()
        stages = [r[0] for r in self.driver.OUTPUTS]
        outputs: list[list[np.ndarray]] = []
        in_flight: deque = deque()

        def collect() -> None:  # copied out: a result read in place holds its channel's buffer, and Ray has ~10
            outputs.append([np.array(y) for y in self._get(in_flight.popleft(), stages, deadline)])

        try:
            for part in parts:
                if len(in_flight) == IN_FLIGHT:
                    collect()
                in_flight.append(self._dag.execute(*part))
            while in_flight:
                collect()
        except ShipeiError as e:
            error = e
        except self._ray.exceptions.RayError as e:  # the graph's channels themselves
            error = ShipeiError(f"the Ray compiled graph failed: {type(e).__name__}: {_last_line(e)}",
                                hint="run without --ray-compiled (plain actors restart stages that die)")
        else:
            self.transfers = self._handoffs(parts)
            return outputs
        in_flight.clear()  # no object ref in this frame once it is in a traceback (see `_get`)
        self._dag.teardown()
        self._dag = None
        raise error

    def _get(self, refs: Any, stages: list[int], deadline: float, loading: bool = False) -> Any:
        """`ray.get(refs)` by `deadline`; a fault becomes an error naming the stage (of `stages`,
        one per ref) it came from. A stage that has not answered a call is restarted. The error is
        raised with no object ref left in its traceback's frames or context: Ray crashes the process
        when one is freed after `ray.shutdown()`, and a caught error may live that long."""
        ray = self._ray
        try:
            return ray.get(refs, timeout=max(deadline - time.monotonic(), 0.0))
        except (TimeoutError, ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            error = self._fault(e, refs, stages, loading)
        refs = None
        raise error

    def _fault(self, error: Exception, refs: Any, stages: list[int], loading: bool) -> ShipeiError:
        """What `_get` raises for `error`."""
        ray = self._ray
        if isinstance(error, TimeoutError):  # ray's GetTimeoutError, and a compiled graph's channel timeout
            k = self._first_pending(refs, stages)
            where = f"stage {k} ({self.driver.STAGES[k][1]})"
            if loading:
                return ShipeiError(f"{where} did not load within {self.options.load_timeout:g} s",
                                   hint="its framework's import or its device may hang; `shipei devices` probes "
                                        "each framework")
            ray.kill(self.actors[k], no_restart=False)  # so that the next call finds it answering
            self._restarting.add(k)
            self._shapes.clear()  # the new actor has compiled nothing
            return ShipeiError(f"{where} did not answer within {self._limit:g} s; its actor is being "
                               f"restarted", hint="a stage that takes this long needs a larger timeout "
                                                  "(RayOptions.timeout, --ray-timeout)")
        k = self._stage_of(error, stages)
        if isinstance(error, ray.exceptions.RayActorError):
            return ShipeiError(f"stage {k} ({self.driver.STAGES[k][1]}) {'did not load' if loading else 'failed'}: "
                               f"its Ray actor died and was not restarted (max_restarts={self.options.max_restarts}): "
                               f"{_last_line(error)}")
        cause = error.cause if isinstance(getattr(error, "cause", None), BaseException) else error
        if isinstance(cause, ShipeiError):
            return ShipeiError(cause.message, cause.loc, cause.hint, cause.notes)
        return ShipeiError(f"stage {k} ({self.driver.STAGES[k][1]}) failed: {type(cause).__name__}: "
                           f"{_last_line(cause)}")

    def _first_pending(self, refs: Any, stages: list[int]) -> int:
        """The earliest stage of `stages` whose ref in `refs` is not ready (the first of them where
        Ray cannot say: a compiled graph's refs)."""
        refs = list(refs) if isinstance(refs, list | tuple) else [refs]
        if not all(isinstance(r, self._ray.ObjectRef) for r in refs):
            return min(stages)
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        return min((s for r, s in zip(refs, stages) if r not in ready), default=min(stages))

    def _stage_of(self, error: Exception, stages: list[int]) -> int:
        """The stage whose actor `error` came from, where Ray says which, else the first of `stages`."""
        actor_id = getattr(error, "actor_id", None) or getattr(error, "_actor_id", None)
        for k, actor in enumerate(self.actors):
            if actor_id is not None and actor._actor_id.hex() == actor_id:
                return k
        return min(stages)

    def close(self) -> None:
        """End the stages' actors (and the compiled graph)."""
        self.closed = True
        if getattr(self, "_dag", None) is not None:
            self._dag.teardown()
            self._dag = None
        if getattr(self, "_folders", None) is None:
            self._settle([actor.release.remote() for actor in getattr(self, "actors", [])])  # a hung stage's stay
        for actor in [*getattr(self, "actors", []), *filter(None, [getattr(self, "_files", None)])]:
            self._ray.kill(actor, no_restart=True)
        for folder in getattr(self, "_folders", None) or []:
            shutil.rmtree(folder, ignore_errors=True)
        self.actors, self._files = [], None

    def __repr__(self) -> str:
        return f"RayPipelineExecutable({self.graph.name}, stages={self.placements})"


def _last_line(error: BaseException) -> str:
    """The last line of `error`'s message: Ray puts the remote traceback before the exception itself."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
