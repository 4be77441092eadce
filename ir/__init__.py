"""The typed IR: types, the op registry, graphs, verifier, printer/parser, reference interpreter."""
