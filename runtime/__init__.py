"""Running generated programs: device choice, weight binding, execution."""

from .executable import DeviceFallbackWarning, Executable, require_framework
from .memory import MemoryEstimate, estimate_memory

__all__ = ["DeviceFallbackWarning", "Executable", "MemoryEstimate", "estimate_memory", "require_framework"]
