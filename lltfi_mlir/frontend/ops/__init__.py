"""Operator handlers, one module per family; importing this package registers them all."""

from . import conv, elementwise, matmul, normalization, pool, shape  # noqa: F401
