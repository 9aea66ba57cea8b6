"""Math expanded into the model's own LLVM IR, so that its loops vectorize and every build computes
the same bits.

llc lowers `llvm.exp.f32` to a call of libm's `expf`, one call per element: the loop vectorizer
cannot widen it without a vector library (whose results differ from `expf`'s), and the last bit of
`expf` depends on which glibc variant the machine selects. EfficientNet-B0 spent 40% of an
inference in Sigmoid's scalar loops and `expf`. Here every `llvm.exp.f32` call of the translated
module is replaced by its expansion, in place:

  x = k ln2 + r, |r| <= ln2/2 (Cody-Waite in double precision, k rounded by the 1.5 * 2^52 shift),
  exp(r) by its degree-9 Taylor polynomial (truncation error < 1e-11, so results are correctly
  rounded but for ties closer than that), 2^k from
  exponent bits, one rounding to float at the end (so subnormal results and overflow to infinity
  round correctly; a NaN comes out as it went in).

It is branch-free (clamps and selects), so opt vectorizes it with the loop around it. Nothing in it
carries `contract` or fast-math flags, so each lane is the same double operations in the same order
in optimized, reference and instrumented builds, and on every machine. The expansion is textual and
inline (not a function): a module split for parallel codegen could not inline a function defined in
another partition. The fault site stays the `llvm.intr.exp` op of the MLIR module, whose result the
hooks see; the expansion runs on the translated LLVM IR, after instrumentation, so it is never a site.
"""

from __future__ import annotations

import itertools
import re
import struct
from math import factorial

_LN2_INV = 0x3FF71547652B82FE    # 1/ln2
_LN2_HI = 0x3FE62E42FEE00000     # ln2 with 21 trailing zero bits: k * LN2_HI is exact for |k| < 2^21
_LN2_LO = 0x3DEA39EF35793C76     # ln2 - LN2_HI
_SHIFT = 0x4338000000000000      # 1.5 * 2^52: z + SHIFT holds round(z) in its low mantissa bits
_DEGREE = 9


def _hex(value: float) -> str:
    """A double as LLVM IR's exact hex literal."""
    return f"0x{struct.unpack('<Q', struct.pack('<d', value))[0]:016X}"


# Taylor coefficients 1/n!, n = 0 .. degree
_TAYLOR = [_hex(1.0 / factorial(n)) for n in range(_DEGREE + 1)]


def _estrin(v: str) -> list[str]:
    """`{v}p` = sum c_n r^n by Estrin's scheme: pairs (c_2i + c_2i+1 r), then pairs of those with r^2,
    r^4, r^8. Its dependency chain is 8 operations deep where Horner's is 18."""
    lines = [f"  {v}r2 = fmul double {v}r, {v}r", f"  {v}r4 = fmul double {v}r2, {v}r2",
             f"  {v}r8 = fmul double {v}r4, {v}r4"]
    terms = []
    for i in range(0, len(_TAYLOR), 2):
        lines += [f"  {v}a{i} = fmul double {v}r, {_TAYLOR[i + 1]}", f"  {v}q{i} = fadd double {v}a{i}, {_TAYLOR[i]}"]
        terms.append(f"{v}q{i}")
    level, power = 0, 2
    while len(terms) > 1:
        assert power <= 8, "degree too high for r^8"
        paired = []
        for j in range(0, len(terms) - 1, 2):
            name = f"{v}p" if len(terms) == 2 else f"{v}e{level}_{j}"
            lines += [f"  {name}m = fmul double {terms[j + 1]}, {v}r{power}",
                      f"  {name} = fadd double {terms[j]}, {name}m"]
            paired.append(name)
        if len(terms) % 2:
            paired.append(terms[-1])
        terms, level, power = paired, level + 1, power * 2
    return lines


def expf_lines(x: str, result: str, tag: str) -> list[str]:
    """LLVM IR computing `result` = exp(`x`) (both float); local names are prefixed `%<tag>.`."""
    v = f"%{tag}."
    lines = [
        f"  {v}under = fcmp olt float {x}, -1.040000e+02",   # exp(-104) rounds to +0.0 in float
        f"  {v}x1 = select i1 {v}under, float -1.040000e+02, float {x}",
        f"  {v}over = fcmp ogt float {v}x1, 8.900000e+01",    # exp(89) rounds to +inf in float
        f"  {v}x2 = select i1 {v}over, float 8.900000e+01, float {v}x1",
        f"  {v}c = fpext float {v}x2 to double",
        f"  {v}z = fmul double {v}c, 0x{_LN2_INV:016X}",
        f"  {v}t = fadd double {v}z, 0x{_SHIFT:016X}",
        f"  {v}k = fsub double {v}t, 0x{_SHIFT:016X}",
        f"  {v}khi = fmul double {v}k, 0x{_LN2_HI:016X}",
        f"  {v}rhi = fsub double {v}c, {v}khi",
        f"  {v}klo = fmul double {v}k, 0x{_LN2_LO:016X}",
        f"  {v}r = fsub double {v}rhi, {v}klo",
    ]
    lines += _estrin(v)
    lines += [
        f"  {v}bits = bitcast double {v}t to i64",
        f"  {v}biased = add i64 {v}bits, {1023 - _SHIFT}",  # k + 1023: t's bits are SHIFT's plus k
        f"  {v}sbits = shl i64 {v}biased, 52",
        f"  {v}s = bitcast i64 {v}sbits to double",
        f"  {v}y = fmul double {v}p, {v}s",
        f"  {v}f = fptrunc double {v}y to float",
        f"  {v}nan = fcmp uno float {x}, 0.000000e+00",
        f"  {result} = select i1 {v}nan, float {x}, float {v}f",  # NaN in, the same NaN out
    ]
    return lines


# `%5 = call float @llvm.exp.f32(float %4)`, optionally `tail`, with trailing attributes/metadata.
_CALL = re.compile(r"^  (%[-\w.$]+) = (?:tail |musttail |notail )?call float @llvm\.exp\.f32\(float ([^,)]+)\).*$",
                   re.MULTILINE)


def use_exact_math(ll: str) -> str:
    """The module with every `llvm.exp.f32` call expanded in place.

    Intrinsic names start with `llvm.`, which no symbol of a model or program can (LLVM reserves
    it), and the expansion's names (`%lltfi.exp<N>.*`) are named values, so the numbering of the
    module's unnamed values is unchanged (the declaration stays, unused). A call in a form not
    matched here keeps calling libm."""
    if "@llvm.exp.f32(" not in ll:
        return ll
    counter = itertools.count()
    return _CALL.sub(lambda m: "\n".join(expf_lines(m.group(2), m.group(1), f"lltfi.exp{next(counter)}")), ll)
