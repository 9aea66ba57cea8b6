"""LLVM dialect -> native program: mlir-translate, llc, and the system C compiler for linking."""
