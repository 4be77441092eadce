"""The typed IR: types, the op registry, graphs, verifier, printer/parser, reference interpreter.

Importing any of it registers every op (`ops`), so the registry is complete before it is read.
"""

from . import ops  # noqa: F401
