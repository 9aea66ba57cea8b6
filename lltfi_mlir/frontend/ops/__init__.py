"""Operator handlers, one module per family; importing this package registers them all."""

from . import conv, elementwise, indexing, logic, matmul, normalization, pool, shape, unary  # noqa: F401
from . import contraction, recurrent, reduce, resize  # noqa: F401  (ops helper: reduce, resize, contraction, recurrent, quantized)
