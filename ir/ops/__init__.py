"""Every IR op, grouped by kind; importing this package registers them all."""

from . import elementwise, loss, nn, reduce, shape  # noqa: F401
