"""DSL source to typed IR: the syntax layer (grammar, AST, parser) and, on top of it, elaboration."""

from .elaborate import elaborate_file, elaborate_source

__all__ = ["elaborate_file", "elaborate_source"]
