"""Operator handlers, one module per family; importing this package registers them all."""

from . import (  # noqa: F401
    contraction,
    conv,
    elementwise,
    indexing,
    logic,
    matmul,
    normalization,
    pool,
    quantized,
    recurrent,
    reduce,
    resize,
    shape,
    unary,
)
