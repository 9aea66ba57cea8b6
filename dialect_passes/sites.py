"""Fault sites: which instructions of an LLVM-dialect module may be corrupted, and by what rule.

A site is one (instruction, register) pair with a stable id. The selection mirrors LLTFI's
`instSelMethod` (opcode include/exclude, CustomTensorOperator with -layerName/-layerNo) plus
selection by ONNX node name and function; the register choice mirrors `regloc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mlir import ir

FP_ARITH = frozenset({"fadd", "fsub", "fmul", "fdiv", "frem", "fneg", "fcmp"})
# In this lowering Relu/MaxPool become llvm.intr.maximum and Softmax llvm.intr.exp: floating-point
# intrinsics are arithmetic too, or activations could never be hit.
FP_INTRINSICS = frozenset({"maximum", "minimum", "maxnum", "minnum", "exp", "exp2", "log", "log2", "log10",
                           "sqrt", "pow", "powi", "fma", "fmuladd", "fabs", "tanh", "sin", "cos", "floor",
                           "ceil", "round", "copysign"})
INT_ARITH = frozenset({"add", "sub", "mul", "udiv", "sdiv", "urem", "srem", "shl", "lshr", "ashr", "and", "or",
                       "xor", "icmp"})
CASTS = frozenset({"trunc", "zext", "sext", "fptrunc", "fpext", "fptoui", "fptosi", "uitofp", "sitofp",
                   "ptrtoint", "inttoptr", "bitcast"})
MEMORY = frozenset({"load", "store"})  # store has no destination: select it with a source register
ADDRESS = frozenset({"getelementptr"})
OTHER = frozenset({"select", "call"})
# "sid" is not an opcode: it selects every instruction that selective instruction duplication
# inserted (duplicates, inline-asm copies, compares, corrections; they carry `lltfi.sid`), whatever
# its opcode, so a campaign on a hardened build also strikes the checking code.
SID = "sid"
GROUPS = {
    "fp": FP_ARITH | FP_INTRINSICS,
    "int": INT_ARITH,
    "cast": CASTS,
    "sid": frozenset({SID}),
    "all": FP_ARITH | FP_INTRINSICS | INT_ARITH | CASTS | MEMORY | ADDRESS | OTHER | {SID},
}
# OD (operator duplication) names its duplicate and its Min node after the protected node; both
# count as that node (its op type and layer) when sites are selected and reported.
OD_DUPLICATE, OD_COMBINE = "__od_dup", "__od_min"
# The paper's default: floating-point arithmetic, plus the SID checking code of hardened builds.
DEFAULT_OPCODES = FP_ARITH | FP_INTRINSICS | {SID}
KNOWN_OPCODES = GROUPS["all"]
REGISTERS = ("dst", "src1", "src2", "src3", "src4", "allsrc", "all")
SCALAR_TYPES = ("f32", "f64", "i1", "i8", "i16", "i32", "i64", "!llvm.ptr")


def opcode_of(op_name: str) -> str | None:
    """`llvm.fmul` -> `fmul`, `llvm.intr.maximum` -> `maximum`; None for non-LLVM ops."""
    if not op_name.startswith("llvm."):
        return None
    name = op_name[len("llvm."):]
    if name.startswith("intr."):
        return name[len("intr."):]
    return name


def node_name_of(loc: ir.Location) -> str | None:
    """The first name in a NameLoc / FusedLoc / CallSiteLoc chain (the ONNX node), if any."""
    if loc.is_a_name():
        return loc.name_str
    if loc.is_a_fused():
        for inner in loc.locations:
            found = node_name_of(inner)
            if found:
                return found
        return None
    if loc.is_a_callsite():
        return node_name_of(loc.callee) or node_name_of(loc.caller)
    return None


def source_of(loc: ir.Location) -> tuple[str, int] | None:
    """(file, line) of the first file location in a FileLineColLoc / FusedLoc chain (C/C++ debug info)."""
    if loc.is_a_file():
        return loc.filename, loc.start_line
    if loc.is_a_fused():
        for inner in loc.locations:
            found = source_of(inner)
            if found:
                return found
    if loc.is_a_callsite():
        return source_of(loc.callee)
    if loc.is_a_name():
        return source_of(loc.child_loc)
    return None


@dataclass(frozen=True)
class NodeInfo:
    """What the ONNX graph says about a node: its op type and its layer number (1-based, per type)."""

    op_type: str
    layer: int


@dataclass(frozen=True)
class SiteSelector:
    """Which instructions and registers become fault sites. Empty include sets mean "all"."""

    opcodes: frozenset[str] = DEFAULT_OPCODES
    exclude_opcodes: frozenset[str] = frozenset()
    operators: frozenset[str] = frozenset()          # ONNX op types, e.g. {"Conv"}
    exclude_operators: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()              # ONNX node names
    exclude_nodes: frozenset[str] = frozenset()
    # (op_type, layer) pairs as LLTFI's -layerName/-layerNo; layer 0 = every node of that type.
    layers: frozenset[tuple[str, int]] = frozenset()
    functions: frozenset[str] = frozenset()
    exclude_functions: frozenset[str] = frozenset()
    register: str = "dst"
    # Calls only to these functions (operator-level injection selects calls to lltfi_op_f32).
    callees: frozenset[str] = frozenset()
    # C/C++ programs: source files (paths or base names) and an inclusive line range.
    sources: frozenset[str] = frozenset()
    lines: tuple[int, int] | None = None
    # LLFI's llfiindex / fi_index: static instruction indices, as `lltfi-mlir sites BUILD` lists them.
    instructions: frozenset[int] = frozenset()
    # LLFI's includeInjectionTrace: also the forward (users) and/or backward (operands) slice.
    trace: frozenset[str] = frozenset()
    # Model programs: only instructions inside an ONNX operator (address arithmetic of the
    # wrapper and the C controller is never selected).
    require_operator: bool = True

    def accepts_source(self, source: tuple[str, int] | None) -> bool:
        if not self.sources and self.lines is None:
            return True
        if source is None:
            return False
        path, line = source
        if self.sources and path not in self.sources and path.rsplit("/", 1)[-1] not in self.sources:
            return False
        return self.lines is None or self.lines[0] <= line <= self.lines[1]

    def accepts_node(self, node: str | None, info: NodeInfo | None) -> bool:
        if self.require_operator and (node is None or info is None):
            return False
        if self.nodes and node not in self.nodes:
            return False
        if node in self.exclude_nodes:
            return False
        op_type = info.op_type if info else None
        if self.operators and op_type not in self.operators:
            return False
        if op_type in self.exclude_operators:
            return False
        return not self.layers or (
            info is not None and any(t == op_type and (n == 0 or n == info.layer) for t, n in self.layers))


@dataclass(frozen=True)
class Site:
    """One static fault site: an instruction's register, with everything needed to report on it."""

    id: int
    function: str
    opcode: str
    type: str
    register: str          # "dst" or "srcN" (1-based operand, as LLTFI's regloc)
    node: str | None
    op_type: str | None
    layer: int | None
    source: str | None = None  # "file.c:12" for programs with debug info
    # A vector op is one site whose every execution is `lanes` instances (one per lane, each a scalar
    # instance of the reference build); `type` is then the element type. Old tables lack it: 1.
    lanes: int = 1
    instruction: int | None = None  # the static instruction index (LLFI's llfiindex)

    def row(self) -> dict:
        # Flat fields only: dataclasses.asdict deep-copies recursively (1.5 s for ResNet-18's sites).
        return {f.name: getattr(self, f.name) for f in fields(self)}


def type_name(t: ir.Type) -> str | None:
    """The scalar type of a site's register: the type itself, or a fixed-length vector's element type."""
    if isinstance(t, ir.VectorType):
        if t.rank != 1 or any(t.scalable_dims):
            return None
        t = t.element_type
    text = str(t)
    return text if text in SCALAR_TYPES else None


def lanes_of(t: ir.Type) -> int:
    """Instances per execution of a register of type `t`: a vector's length, else 1."""
    return t.shape[0] if isinstance(t, ir.VectorType) else 1


@dataclass
class SiteTable:
    sites: list[Site] = field(default_factory=list)

    def add(self, **kwargs) -> Site:
        site = Site(id=len(self.sites), **kwargs)
        self.sites.append(site)
        return site
