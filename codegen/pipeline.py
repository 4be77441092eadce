"""The driver of a partitioned model: a readable `<model>_pipeline.py` that loads each stage's
standalone program and hands tensors from one stage to the next.

Hand-offs go through the programs' own `export` and `accept`: DLPack, the same memory, where both
frameworks carry the dtype, else a copy through numpy; each is timed and logged. The driver needs
numpy and the stages' frameworks, not shipei: `python gpt_pipeline.py` runs it on random inputs.
shipei's runtime runs the same driver, one stage per worker thread, micro-batched
(`runtime.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Graph
from ..ir.pipeline import PipelinePlan
from ..ir.types import eval_dim
from .module import EXAMPLE_DIM, GeneratedModule
from .writer import Code, inert_text


@dataclass(frozen=True)
class GeneratedPipeline:
    """The driver's text and the stages' programs, in order."""

    graph_name: str
    source: str
    stages: list[GeneratedModule]

    @property
    def filename(self) -> str:
        return pipeline_filename(self.graph_name)


def pipeline_filename(graph_name: str) -> str:
    return f"{graph_name.lower()}_pipeline.py"


_DRIVER = '''
HERE = os.path.dirname(os.path.abspath(__file__))
#: Each placement's device kind as the frameworks spell it.
DEVICE_NAMES = {"cpu": ("cpu",), "cuda": ("cuda", "gpu"), "tpu": ("tpu",), "ascend": ("ascend", "npu")}


class Stage:
    """One stage: its program, the model loaded on its device, where its inputs come from and
    which of its results leave it (to another placement, or as the pipeline's outputs)."""

    def __init__(self, index, allow_fallback=False, numbered=True):
        filename, self.placement = STAGES[index]
        self.index, self.reads = index, READS[index]
        self.exports = {j for s, reads in enumerate(READS) for k, j in reads
                        if k == index and STAGES[s][1] != self.placement}
        self.returns = {j for k, j in OUTPUTS if k == index}
        self.program = _import(filename)
        self.device, self.fell_back = _device(self.program.available_devices(), self.placement, allow_fallback,
                                              numbered)
        self.model = self.program.load(self.program.WEIGHTS, self.device)

    def step(self, stages, values, log=None):
        """Its results, computed from `values` (the pipeline's inputs ("input", i) and earlier
        stages' results), as entries to add to it: (index, j) for result j; ("exported", index, j)
        for one another placement reads, as its program's `export` hands it on; ("numpy", index, j)
        for one the pipeline returns. Those two are made here, so that only this stage calls into
        its framework (MindSpore makes a call from another thread wait for the work it has in
        flight: a whole micro-batch). A value from another placement comes in through `accept`
        (the same memory by DLPack where it can), timed and logged as (from stage, to stage, bytes,
        copied, seconds)."""
        args = []
        for ref in self.reads:
            x = values[ref]
            if ref[0] == "input":
                x, _ = self.program.accept(x, self.device)
            elif stages[ref[0]].placement != self.placement:
                start = time.perf_counter()
                x, copied = self.program.accept(values[("exported", *ref)], self.device)
                if log is not None:
                    size = int(np.prod(tuple(x.shape))) * ITEMSIZE[ref]
                    log.append((ref[0], self.index, size, copied, time.perf_counter() - start))
            args.append(x)
        made = {}
        for j, y in enumerate(self.program.call(self.model, *args)):
            made[self.index, j] = y
            if j in self.exports:
                made["exported", self.index, j] = self.program.export(y)
            if j in self.returns:
                made["numpy", self.index, j] = self.program.to_numpy(y)
        return made

    def apply(self, *arrays):
        """Its results as numpy, from its inputs as numpy in the order of its READS: the stage on
        its own, as a Ray actor runs it (values cross between processes there anyway)."""
        args = [self.program.accept(x, self.device)[0] for x in arrays]
        return [self.program.to_numpy(y) for y in self.program.call(self.model, *args)]


def _import(filename):
    spec = importlib.util.spec_from_file_location(filename[:-3], os.path.join(HERE, filename))
    program = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = program  # frameworks that compile Python (ms.jit) import it by name
    spec.loader.exec_module(program)
    return program


def _device(available, placement, allow_fallback, numbered=True):
    """The program's own name for the placement's device among those `available` to it, or the CPU
    when it is absent and that is allowed. Torch's GPUs by the placement's number where `numbered`;
    not where the process sees only the one it was given (a Ray actor's is its cuda:0)."""
    kind = placement.split(":")[1]
    index = placement.split(":")[2] if placement.count(":") == 2 and numbered else None
    name = next((n for n in DEVICE_NAMES[kind] if n in available), None)
    if name is not None:
        return name if index is None or name == "cpu" or not placement.startswith("torch") else f"{name}:{index}", False
    if not allow_fallback:
        raise RuntimeError(f"{placement} is not available here (the program sees {', '.join(available)})")
    return "cpu", True


def load(allow_fallback=False):
    """Every stage, loaded on its placement's device (or the CPU, where that is absent and allowed)."""
    return [Stage(k, allow_fallback) for k in range(len(STAGES))]


def run(stages, inputs, log=None):
    """Numpy in, numpy out: the stages in order, each on what the earlier ones made. `log` gathers
    the hand-offs between placements (see `Stage.step`)."""
    values = {("input", i): x for i, x in enumerate(inputs)}
    for stage in stages:
        values.update(stage.step(stages, values, log))
    return outputs(values)


def outputs(values):
    """The pipeline's outputs from `values`, as numpy (each converted by the stage that made it)."""
    return [np.asarray(values[ref]) if ref[0] == "input" else values[("numpy", *ref)] for ref in OUTPUTS]


def example_inputs(seed=0):
    """Random inputs of the declared shapes (shape symbols set to {dim})."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f"
            else rng.integers(0, 2, shape).astype(dtype) for _, shape, dtype in INPUTS]


if __name__ == "__main__":
    log = []
    stages = load(allow_fallback=True)
    for stage in stages:
        if stage.fell_back:
            print(f"stage {stage.index}: {stage.placement} is not available here; it runs on the CPU")
    for output in run(stages, example_inputs(), log):
        print(output.shape, output.dtype)
    for source, destination, size, copied, seconds in log:
        print(f"stage {source} -> {destination}: {size} bytes, {'copied' if copied else 'zero-copy'}, "
              f"{seconds * 1e6:.0f} us")
'''


def write_pipeline(graph: Graph, plan: PipelinePlan, stages: list[GeneratedModule], source: str) -> GeneratedPipeline:
    """The driver for `plan`, whose stages' programs are `stages`."""
    code = Code()
    rows = [(f"stage {s.index}", str(s.placement), m.filename, ", ".join(s.modules) or "-")
            for s, m in zip(plan.stages, stages)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    targets = sorted({s.placement.target for s in plan.stages})
    code(f'"""{graph.name} in {len(plan.stages)} stages over {" and ".join(targets)}, generated by shipei from '
         f'{inert_text(source)}.',
         "",
         *("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + inert_text(r[3]) for r in rows),
         "",
         "Each stage is a standalone program; this driver loads them and hands each tensor to the next",
         "stage by DLPack (the same memory) where both frameworks carry it, else by a copy. Run",
         f"`python {pipeline_filename(graph.name)}` for random inputs; it prints the output shapes and each hand-off.",
         "Regenerate rather than edit.",
         '"""',
         "",
         "import importlib.util",
         "import os",
         "import sys",
         "import time",
         "",
         "import numpy as np",
         "",
         "STAGES = [  # program, placement",
         *(f"    ({m.filename!r}, {str(s.placement)!r})," for s, m in zip(plan.stages, stages)),
         "]",
         '#: What each stage reads, in order: ("input", i) is the pipeline\'s input i, (s, j) output j of stage s.',
         "READS = [",
         *(f"    {s.reads!r}," for s in plan.stages),
         "]",
         f"OUTPUTS = {plan.outputs!r}  # where each output comes from, the same way",
         "ITEMSIZE = {  # bytes per element of each stage's outputs",
         *(f"    ({s.index}, {j}): {v.dtype.itemsize}," for s in plan.stages for j, v in enumerate(s.graph.outputs)),
         "}",
         "INPUTS = [  # name, example shape, dtype")
    env = dict.fromkeys(graph.symbols(), EXAMPLE_DIM)
    for v in graph.inputs:
        code(f"    ({v.name!r}, {tuple(eval_dim(d, env) for d in v.shape)!r}, {v.dtype.numpy.name!r}),")
    code("]", "", *_DRIVER.replace("{dim}", str(EXAMPLE_DIM)).strip("\n").splitlines())
    return GeneratedPipeline(graph.name, code.text(), stages)
