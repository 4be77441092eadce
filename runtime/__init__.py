"""Running generated programs: device choice, weight binding, execution."""

from ..codegen.frameworks import require_framework
from .executable import DeviceFallbackWarning, Executable
from .memory import MemoryEstimate, estimate_memory

__all__ = ["DeviceFallbackWarning", "Executable", "MemoryEstimate", "estimate_memory", "require_framework"]
