"""shipei: compile one model, written once, to PyTorch, JAX, TensorFlow-XLA and MindSpore.

    import shipei
    compiled = shipei.compile("examples/mlp.sp", target="torch")
    exe = compiled.load()            # CUDA when available, else CPU with a warning
    y = exe(x)                       # numpy in, numpy out
    shipei.reference(compiled.ir, [x], compiled.weights)   # the numpy oracle

No framework is imported until a target is used.
"""

from .api import Compiled, compile, load, optimize, parse, reference
from .frontend.limits import Limits
from .ir.errors import ShipeiError
from .partitioned import CompiledPipeline
from .runtime.distributed import RayOptions
from .training import Dataset, Trainer

__all__ = ["Compiled", "CompiledPipeline", "Dataset", "Limits", "RayOptions", "ShipeiError", "Trainer", "compile",
           "load", "optimize", "parse", "reference"]
__version__ = "0.1.0"
