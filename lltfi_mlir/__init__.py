"""lltfi-mlir: instruction-level fault injection for ONNX models and C/C++ programs through MLIR."""

from .build import Build
from .compiler import CompileOptions, compile_onnx
from .errors import LltfiError

__all__ = ["Build", "CompileOptions", "LltfiError", "compile_onnx"]
__version__ = "0.1.0"
