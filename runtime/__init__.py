"""Running generated programs: device choice, weight binding, execution."""

from .executable import DeviceFallbackWarning, Executable, require_framework

__all__ = ["DeviceFallbackWarning", "Executable", "require_framework"]
