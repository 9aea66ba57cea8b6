"""ONNX -> MLIR (func/linalg/tensor/arith/math): load and normalise the graph, then import it."""
