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

`erff` (Erf, and the exact GELU that PyTorch exports as Erf) is replaced the same way: libm's is a
scalar call with branches on the argument's range (26 ns per element on normal inputs here; 13.5%
of ConvNeXt-T's inference). In double precision, with x's sign put back at the end:

  |x| < 1:      x * P(x^2), P of degree 10 (relative error 6e-16);
  1 <= |x|:     Q(u), u = (min(|x|, 4) - 2.5) / 1.5, Q of degree 24 (absolute error 3e-15; erf(4)
                rounds to 1.0f, as erf does above it);

both computed for every lane and one selected. P and Q interpolate erf at Chebyshev nodes (mpmath,
50 digits; `_ERF_SMALL`, `_ERF_LARGE`), so the rounded float is erf's correctly rounded value but
for ties closer than about 1e-14.
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


def _estrin(v: str, coefficients: list[str]) -> list[str]:
    """`{v}p` = sum c_n r^n (r: `{v}r`) by Estrin's scheme: pairs (c_2i + c_2i+1 r), then pairs of those
    with r^2, r^4, ... For exp's degree 9 its dependency chain is 8 operations deep where Horner's is 18."""
    terms, lines = [], []
    for i in range(0, len(coefficients), 2):
        if i + 1 == len(coefficients):  # an odd count: the last coefficient pairs up as it is
            terms.append(coefficients[i])
            continue
        lines += [f"  {v}a{i} = fmul double {v}r, {coefficients[i + 1]}",
                  f"  {v}q{i} = fadd double {v}a{i}, {coefficients[i]}"]
        terms.append(f"{v}q{i}")
    assert len(terms) > 1, "Estrin's scheme here needs degree 2 or more"
    powers, count = [], len(terms)
    while count > 1:
        powers.append(2 ** (len(powers) + 1))
        count = -(-count // 2)
    # r^2, r^4, ... first (exp's expansion has always read this way)
    lines = [f"  {v}r2 = fmul double {v}r, {v}r"] + [f"  {v}r{q} = fmul double {v}r{q // 2}, {v}r{q // 2}"
                                                     for q in powers[1:]] + lines
    for level, power in enumerate(powers):
        paired = []
        for j in range(0, len(terms) - 1, 2):
            name = f"{v}p" if len(terms) == 2 else f"{v}e{level}_{j}"
            lines += [f"  {name}m = fmul double {terms[j + 1]}, {v}r{power}",
                      f"  {name} = fadd double {terms[j]}, {name}m"]
            paired.append(name)
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
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
    lines += _estrin(v, _TAYLOR)
    lines += [
        f"  {v}bits = bitcast double {v}t to i64",
        f"  {v}biased = add i64 {v}bits, {1023 - _SHIFT}",  # k + 1023: t's bits are SHIFT's plus k
        f"  {v}sbits = shl i64 {v}biased, 52",
        f"  {v}s = bitcast i64 {v}sbits to double",
        f"  {v}y = fmul double {v}p, {v}s",
    ]
    return lines + _to_float(v, x, result)


def _to_float(v: str, x: str, result: str) -> list[str]:
    """`result` = `{v}y` rounded once to float, or `x` itself when it is a NaN (the same NaN out)."""
    return [f"  {v}f = fptrunc double {v}y to float",
            f"  {v}nan = fcmp uno float {x}, 0.000000e+00",
            f"  {result} = select i1 {v}nan, float {x}, float {v}f"]


# erf(x) / x as a polynomial in t = x^2 on [0, 1], and erf(2.5 + 1.5 u) as one in u on [-1, 1]: the
# interpolants of degree 10 and 24 at Chebyshev nodes, computed with mpmath at 50 digits and rounded.
_ERF_SMALL = ["0x3FF20DD750429B6B", "0xBFD812746B037352", "0x3FBCE2F21A000D30", "0xBF9B82CE3026AAE0",
              "0x3F7565BCB082CCA2", "0xBF4C02D67E37081E", "0x3F1F99C295886F05", "0xBEEF4684782919E8",
              "0x3EBB5D3EA9FD0B5A", "0xBE8462A758D4591D", "0x3E443F6D0DEE7032"]
_ERF_LARGE = ["0x3FEFFCAA8F4C9BEA", "0x3F6AC44A297BE020", "0xBF89180586E294E8", "0x3F9CDB9FF49E67C0",
              "0xBFA65964EC1AE642", "0x3FA7C8C49AB685CF", "0xBFA0521F9908720D", "0x3F82FAE1C95933D5",
              "0x3F7B5D36D13C86F6", "0xBF83B496ECDEB129", "0x3F729CCDB9B6E1E6", "0x3F3D1D1889230D05",
              "0xBF5DEE0D8B73FF0D", "0x3F4DED0E1FD366B8", "0x3F0BAA65810D93A7", "0xBF32729C63EB5574",
              "0x3F1EF70A29D65956", "0x3EF3ACBC13B6531E", "0xBF02B781C0552E10", "0x3EE2A6261C014F3A",
              "0x3ED2756B24BC1E46", "0xBEC716E06842C705", "0xBE53A95F7800B55C", "0x3E938BAFBAAA37F5",
              "0xBE68733022F308AF"]
_ONE, _FOUR, _MID, _INV_HALF = _hex(1.0), _hex(4.0), _hex(2.5), _hex(2.0 / 3.0)


def erff_lines(x: str, result: str, tag: str) -> list[str]:
    """LLVM IR computing `result` = erf(`x`) (both float); local names are prefixed `%<tag>.`."""
    v = f"%{tag}."
    lines = [
        f"  {v}d = fpext float {x} to double",
        f"  {v}neg = fcmp olt double {v}d, 0.0",
        f"  {v}nd = fneg double {v}d",
        f"  {v}a = select i1 {v}neg, double {v}nd, double {v}d",
        f"  {v}small = fcmp olt double {v}a, {_ONE}",
        f"  {v}t.r = fmul double {v}d, {v}d",  # exact: a float's square fits a double
    ]
    lines += _estrin(f"{v}t.", _ERF_SMALL)
    lines += [
        f"  {v}p1 = fmul double {v}d, {v}t.p",
        f"  {v}a1 = select i1 {v}small, double {_ONE}, double {v}a",  # selects, not minnum: NaN stays
        f"  {v}big = fcmp ogt double {v}a1, {_FOUR}",
        f"  {v}a2 = select i1 {v}big, double {_FOUR}, double {v}a1",
        f"  {v}um = fsub double {v}a2, {_MID}",
        f"  {v}u.r = fmul double {v}um, {_INV_HALF}",
    ]
    lines += _estrin(f"{v}u.", _ERF_LARGE)
    lines += [
        f"  {v}nq = fneg double {v}u.p",
        f"  {v}p2 = select i1 {v}neg, double {v}nq, double {v}u.p",
        f"  {v}y = select i1 {v}small, double {v}p1, double {v}p2",
    ]
    return lines + _to_float(v, x, result)


# `%5 = call float @llvm.exp.f32(float %4)`, optionally `tail`, with trailing attributes/metadata.
_CALL = re.compile(r"^  (%[-\w.$]+) = (?:tail |musttail |notail )?call float @llvm\.exp\.f32\(float ([^,)]+)\).*$",
                   re.MULTILINE)
# `%5 = call float @erff(float %4)`, as convert-math-to-libm leaves `math.erf`.
_ERFF_CALL = re.compile(r"^  (%[-\w.$]+) = (?:tail |musttail |notail )?call float @erff\(float ([^,)]+)\).*$",
                        re.MULTILINE)


def use_exact_math(ll: str) -> str:
    """The module with every `llvm.exp.f32` and `erff` call expanded in place.

    Intrinsic names start with `llvm.`, which no symbol of a model or program can (LLVM reserves
    it); `erff` is libm's unless the module defines its own (then its calls stay). The expansions'
    names (`%lltfi.exp<N>.*`, `%lltfi.erf<N>.*`) are named values, so the numbering of the module's
    unnamed values is unchanged (the declarations stay, unused). A call in a form not matched here
    keeps calling libm."""
    if "@llvm.exp.f32(" in ll:
        counter = itertools.count()
        ll = _CALL.sub(lambda m: "\n".join(expf_lines(m.group(2), m.group(1), f"lltfi.exp{next(counter)}")), ll)
    if "@erff(" in ll and not re.search(r"^define [^@]*@erff\(", ll, re.MULTILINE):
        counter = itertools.count()
        ll = _ERFF_CALL.sub(lambda m: "\n".join(erff_lines(m.group(2), m.group(1), f"lltfi.erf{next(counter)}")), ll)
    return ll
