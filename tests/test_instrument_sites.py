"""InstrumentSitesPass on hand-written LLVM-dialect IR: printed IR checked with FileCheck, and the
instrumented module executed to check the counting against a fully hooked build.

The execution checks are the pass's contract: for every target k, the hook that reads
`lltfi_fi_remaining == 0` is the k-th selected instance of the program-order enumeration that a
build with a hook at every instance (`versioning=False`) produces; the fast paths consume exactly
what the hooks count; unit entries times instances per entry give every site's count.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from lltfi_mlir.dialect_passes.instrument_sites import InstrumentResult, InstrumentSitesPass
from lltfi_mlir.dialect_passes.loop_nests import analyze, compute_counts
from lltfi_mlir.dialect_passes.sites import GROUPS, NodeInfo, Site, SiteSelector
from lltfi_mlir.llvm_backend.toolchain import tool_path
from mlir import ir

NODES = {name: NodeInfo(name.capitalize(), 1) for name in ("mul", "add", "cmp", "sub")}

# i < 3 { j < 4 { buf[4i+j] *= 2 } buf[i] += 2 }: one nest, two site-holding blocks (15 per entry).
NEST = """
llvm.func @run(%buf: !llvm.ptr) {
  %c0 = llvm.mlir.constant(0 : i64) : i64
  %c1 = llvm.mlir.constant(1 : i64) : i64
  %c3 = llvm.mlir.constant(3 : i64) : i64
  %c4 = llvm.mlir.constant(4 : i64) : i64
  %two = llvm.mlir.constant(2.0 : f32) : f32
  llvm.br ^outer(%c0 : i64)
^outer(%i: i64):
  %ci = llvm.icmp "slt" %i, %c3 : i64
  llvm.cond_br %ci, ^outer_body, ^exit
^outer_body:
  llvm.br ^inner(%c0 : i64)
^inner(%j: i64):
  %cj = llvm.icmp "slt" %j, %c4 : i64
  llvm.cond_br %cj, ^inner_body, ^outer_latch
^inner_body:
  %row = llvm.mul %i, %c4 : i64
  %idx = llvm.add %row, %j : i64
  %p = llvm.getelementptr %buf[%idx] : (!llvm.ptr, i64) -> !llvm.ptr, f32
  %x = llvm.load %p : !llvm.ptr -> f32
  %y = llvm.fmul %x, %two : f32 loc("mul")
  llvm.store %y, %p : f32, !llvm.ptr
  %j1 = llvm.add %j, %c1 : i64
  llvm.br ^inner(%j1 : i64)
^outer_latch:
  %q = llvm.getelementptr %buf[%i] : (!llvm.ptr, i64) -> !llvm.ptr, f32
  %a = llvm.load %q : !llvm.ptr -> f32
  %b = llvm.fadd %a, %two : f32 loc("add")
  llvm.store %b, %q : f32, !llvm.ptr
  %i1 = llvm.add %i, %c1 : i64
  llvm.br ^outer(%i1 : i64)
^exit:
  llvm.return
}
"""

# The entry block's fmul is used in ^next: the entry cannot be copied, its hooks run inline.
ESCAPING = """
llvm.func @run(%buf: !llvm.ptr) {
  %c1 = llvm.mlir.constant(1 : i64) : i64
  %x = llvm.load %buf : !llvm.ptr -> f32
  %y = llvm.fmul %x, %x : f32 loc("mul")
  %q = llvm.getelementptr %buf[%c1] : (!llvm.ptr, i64) -> !llvm.ptr, f32
  llvm.br ^next
^next:
  %z = llvm.fadd %y, %y : f32 loc("add")
  llvm.store %z, %q : f32, !llvm.ptr
  %w = llvm.fsub %z, %x : f32 loc("sub")
  llvm.store %w, %buf : f32, !llvm.ptr
  llvm.return
}
"""

# i < 4 { buf[4i:4i+4] = v * v } as vector<4xf32>, then a vector<3xf32> fadd and a vector<4xi1> fcmp.
VECTORS = """
llvm.func @run(%buf: !llvm.ptr) {
  %c0 = llvm.mlir.constant(0 : i64) : i64
  %c1 = llvm.mlir.constant(1 : i64) : i64
  %c4 = llvm.mlir.constant(4 : i64) : i64
  %c16 = llvm.mlir.constant(16 : i64) : i64
  %c20 = llvm.mlir.constant(20 : i64) : i64
  %limit = llvm.mlir.constant(dense<9.0> : vector<4xf32>) : vector<4xf32>
  llvm.br ^h(%c0 : i64)
^h(%i: i64):
  %ci = llvm.icmp "slt" %i, %c4 : i64
  llvm.cond_br %ci, ^body, ^tail
^body:
  %idx = llvm.mul %i, %c4 : i64
  %p = llvm.getelementptr %buf[%idx] : (!llvm.ptr, i64) -> !llvm.ptr, f32
  %v = llvm.load %p : !llvm.ptr -> vector<4xf32>
  %w = llvm.fmul %v, %v : vector<4xf32> loc("mul")
  llvm.store %w, %p : vector<4xf32>, !llvm.ptr
  %i1 = llvm.add %i, %c1 : i64
  llvm.br ^h(%i1 : i64)
^tail:
  %p3 = llvm.getelementptr %buf[%c16] : (!llvm.ptr, i64) -> !llvm.ptr, f32
  %u = llvm.load %p3 : !llvm.ptr -> vector<3xf32>
  %u2 = llvm.fadd %u, %u : vector<3xf32> loc("add")
  llvm.store %u2, %p3 : vector<3xf32>, !llvm.ptr
  %p4 = llvm.getelementptr %buf[%c20] : (!llvm.ptr, i64) -> !llvm.ptr, f32
  %s = llvm.load %p4 : !llvm.ptr -> vector<4xf32>
  %m = llvm.fcmp "olt" %s, %limit : vector<4xf32> loc("cmp")
  %r = llvm.select %m, %s, %limit : vector<4xi1>, vector<4xf32>
  llvm.store %r, %p4 : vector<4xf32>, !llvm.ptr
  llvm.return
}
"""

HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>

uint64_t lltfi_fi_remaining = UINT64_MAX;
uint64_t lltfi_unit_counts[NUM_UNITS];
static int profiling, hits, hit_site;
static uint64_t hit_bits, calls[NUM_SITES];

/* As runtime/fi_runtime.c: count in the profile, else count down; inject where it reads 0. */
static int at_target(int32_t site) {
  if (profiling) { calls[site]++; return 0; }
  if (lltfi_fi_remaining == 0) { lltfi_fi_remaining = UINT64_MAX; hits++; hit_site = site; return 1; }
  lltfi_fi_remaining--;
  return 0;
}

#define HOOK(NAME, CTYPE, FLIP)                                   \
  CTYPE NAME(int32_t site, CTYPE value) {                         \
    if (!at_target(site)) return value;                           \
    hit_bits = 0;                                                 \
    memcpy(&hit_bits, &value, sizeof value);                      \
    uint64_t flipped = hit_bits ^ (FLIP);                         \
    memcpy(&value, &flipped, sizeof value);                       \
    return value;                                                 \
  }
/* Floats flip the sign; integers their lowest bit (an index stays inside the buffer); pointers nothing. */
HOOK(lltfi_fi_f32, float, 1ull << 31)
HOOK(lltfi_fi_f64, double, 1ull << 63)
HOOK(lltfi_fi_i1, uint8_t, 1)
HOOK(lltfi_fi_i32, uint32_t, 1)
HOOK(lltfi_fi_i64, uint64_t, 1)
HOOK(lltfi_fi_ptr, void *, 0)
/* As runtime/fi_runtime.c: a vector's lanes, in order, each one scalar instance. */
void lltfi_fi_lanes_f32(int32_t site, float *lanes, int32_t n) {
  for (int32_t i = 0; i < n; i++) lanes[i] = lltfi_fi_f32(site, lanes[i]);
}
void lltfi_fi_lanes_f64(int32_t site, double *lanes, int32_t n) {
  for (int32_t i = 0; i < n; i++) lanes[i] = lltfi_fi_f64(site, lanes[i]);
}
void lltfi_fi_lanes_i32(int32_t site, uint32_t *lanes, int32_t n) {
  for (int32_t i = 0; i < n; i++) lanes[i] = lltfi_fi_i32(site, lanes[i]);
}
void lltfi_fi_lanes_i64(int32_t site, uint64_t *lanes, int32_t n) {
  for (int32_t i = 0; i < n; i++) lanes[i] = lltfi_fi_i64(site, lanes[i]);
}

void run(float *buf);
enum { N = 64 };
static void init(float *b) { for (int i = 0; i < N; i++) b[i] = 1.0f + 0.375f * i; }

int main(void) {
  float golden[N], buf[N];
  init(golden);
  run(golden);
  memset(lltfi_unit_counts, 0, sizeof lltfi_unit_counts);
  init(buf);
  lltfi_fi_remaining = 1ull << 62;
  run(buf);
  unsigned long long consumed = (1ull << 62) - lltfi_fi_remaining;
  printf("consumed %llu\nunits", consumed);
  for (int u = 0; u < NUM_UNITS; u++) printf(" %llu", (unsigned long long)lltfi_unit_counts[u]);
  profiling = 1;
  lltfi_fi_remaining = 0; /* every unit enters its cold copy */
  init(buf);
  run(buf);
  profiling = 0;
  printf("\nhooks");
  for (int s = 0; s < NUM_SITES; s++) printf(" %llu", (unsigned long long)calls[s]);
  printf("\n");
  for (unsigned long long k = 0; k <= consumed; k++) {
    hits = 0;
    init(buf);
    lltfi_fi_remaining = k;
    run(buf);
    printf("target %d %d %llx %d\n", hits, hits ? hit_site : -1, hits ? (unsigned long long)hit_bits : 0ull,
           memcmp(buf, golden, sizeof buf) != 0);
  }
  return 0;
}
"""


@dataclass
class Run:
    consumed: int
    units: list[int]
    hooks: list[int]
    targets: list[tuple[int, int, int, bool]]  # per k: hooks that read 0, site, value bits, output changed


def instrument(text: str, **options) -> tuple[str, InstrumentResult]:
    with ir.Context():
        module = ir.Module.parse(text)
        result = InstrumentSitesPass(node_info=NODES, **options).apply(module)
        assert module.operation.verify()
        return str(module), result


def execute(text: str, result: InstrumentResult, tmp_path: Path) -> Run:
    """Build the instrumented module with the counting harness (llc -O0, cc) and run every target."""
    tag = f"m{len(list(tmp_path.glob('*.mlir')))}"
    (tmp_path / f"{tag}.mlir").write_text(text)
    subprocess.run([tool_path("mlir-translate"), "--mlir-to-llvmir", f"{tag}.mlir", "-o", f"{tag}.ll"],
                   cwd=tmp_path, check=True)
    subprocess.run([tool_path("llc"), "-O0", "-filetype=obj", "-relocation-model=pic", f"{tag}.ll", "-o",
                    f"{tag}.o"], cwd=tmp_path, check=True)
    (tmp_path / "harness.c").write_text(HARNESS)
    subprocess.run(["cc", "-O1", f"-DNUM_UNITS={max(1, len(result.units))}", f"-DNUM_SITES={len(result.sites)}",
                    "harness.c", f"{tag}.o", "-o", tag], cwd=tmp_path, check=True)
    lines = subprocess.run([str(tmp_path / tag)], capture_output=True, text=True, check=True).stdout.splitlines()
    targets = []
    for line in lines[3:]:
        hits, site, bits, changed = line.split()[1:]
        targets.append((int(hits), int(site), int(bits, 16), changed == "1"))
    return Run(int(lines[0].split()[1]), [int(c) for c in lines[1].split()[1:]],
               [int(c) for c in lines[2].split()[1:]], targets)


def check_counts(run: Run, result: InstrumentResult, visible: bool = True) -> None:
    """Fast paths, hooks and unit counters agree; each k < total hits exactly one instance, and
    (`visible`: every selected value reaches the output) the flipped value replaced the original."""
    per_site = [0] * len(result.sites)
    for entries, unit in zip(run.units, result.units):
        for site, per_entry in unit.items():
            per_site[site] += entries * per_entry
    assert run.consumed == sum(run.hooks) and per_site == run.hooks
    assert len(run.targets) == run.consumed + 1
    assert all(hits == 1 and (changed or not visible) for hits, _, _, changed in run.targets[:-1]), run.targets
    assert run.targets[-1][0] == 0  # k == total: past the last instance, no hook fires


def enumeration(run: Run, result: InstrumentResult) -> list[tuple[tuple, int]]:
    """Per k: (the static site, by content rather than id) and the value it saw."""
    by_id = {s.id: (s.function, s.opcode, s.register, s.node, s.lanes) for s in result.sites}
    return [(by_id[site], bits) for _, site, bits, _ in run.targets[:-1]]


def reference(text: str, tmp_path: Path, **options) -> list[tuple[tuple, int]]:
    """The enumeration of a build that calls the hook at every instance, in program order."""
    hooked, result = instrument(text, versioning=False, **options)
    assert result.versioned_blocks == result.versioned_nests == 0
    run = execute(hooked, result, tmp_path)
    check_counts(run, result, visible=False)
    return enumeration(run, result)


def filecheck(text: str, checks: str, tmp_path: Path) -> None:
    """Match `text` against FileCheck directives (the `filecheck` package, LLVM's FileCheck in Python)."""
    pytest.importorskip("filecheck")
    (tmp_path / "checks").write_text(checks)
    proc = subprocess.run([sys.executable, "-m", "filecheck", str(tmp_path / "checks")], input=text, text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def module(body: str) -> str:
    return f"module {{\n{body}\n}}\n"


def shuffled(text: str, seed: int) -> str:
    """The same function with its non-entry blocks in another textual order (legal: SSA follows the CFG)."""
    head, *blocks = re.split(r"\n(?=\^)", text.strip().removesuffix("}").rstrip())
    random.Random(seed).shuffle(blocks)
    return "\n".join([head, *blocks]) + "\n}\n"


# -- the printed IR --------------------------------------------------------------------------------------
def test_nest_is_checked_once_in_its_preheader(tmp_path):
    text, result = instrument(module(NEST))
    assert result.versioned_nests == 1 and result.units == [{0: 3, 1: 12}]
    filecheck(text, """
CHECK:      llvm.mlir.global external @lltfi_unit_counts() {{.*}} : !llvm.array<1 x i64>
CHECK-LABEL: llvm.func @run
CHECK:      llvm.mlir.addressof @lltfi_unit_counts
CHECK:      llvm.mlir.addressof @lltfi_fi_remaining
CHECK-NEXT: %[[R:.*]] = llvm.load %{{.*}} {lltfi.inserted} : !llvm.ptr -> i64
CHECK-NEXT: %[[N:.*]] = llvm.mlir.constant(15 : i64) {lltfi.inserted} : i64
CHECK-NEXT: %[[E:.*]] = llvm.icmp "ult" %[[R]], %[[N]]
CHECK:      llvm.cond_br %[[E]] weights([1, 1048576]), ^[[COLD:bb[0-9]+]](%{{.*}} : i64), ^bb1(%{{.*}} : i64)
CHECK:      ^bb1(
CHECK-NOT:  llvm.call @lltfi_fi_f32
CHECK:      ^[[COLD]](
CHECK:      llvm.call @lltfi_fi_f32
""", tmp_path)


def test_vector_lanes_pass_through_the_scalar_hook_in_order(tmp_path):
    text, result = instrument(module(VECTORS))
    assert {(s.opcode, s.type, s.lanes) for s in result.sites} == {("fmul", "f32", 4), ("fadd", "f32", 3),
                                                                   ("fcmp", "i1", 4)}
    filecheck(text, """
CHECK:      %[[SLOT:.*]] = llvm.alloca %{{.*}} x vector<4xf32> {lltfi.inserted}
CHECK:      llvm.fmul %{{.*}} {lltfi.sites = {dst = [[ID:[0-9]+]] : i32}} : vector<4xf32>
CHECK-NEXT: llvm.store
CHECK-DAG:  %[[S:.*]] = llvm.mlir.constant([[ID]] : i32) {lltfi.inserted} : i32
CHECK-DAG:  %[[N:.*]] = llvm.mlir.constant(4 : i32) {lltfi.inserted} : i32
CHECK:      %[[W:.*]] = llvm.fmul %{{.*}} {lltfi.sites = {dst = [[ID]] : i32}} : vector<4xf32>
CHECK-NEXT: llvm.store %[[W]], %[[SLOT]] {lltfi.inserted} : vector<4xf32>, !llvm.ptr
CHECK-NEXT: llvm.call @lltfi_fi_lanes_f32(%[[S]], %[[SLOT]], %[[N]]) {lltfi.inserted} : (i32, !llvm.ptr, i32) -> ()
CHECK-NEXT: %[[V:.*]] = llvm.load %[[SLOT]] {lltfi.inserted} : !llvm.ptr -> vector<4xf32>
CHECK-NEXT: llvm.store %[[V]], %{{.*}} : vector<4xf32>, !llvm.ptr
""", tmp_path)
    # i1 lanes are widened to i8 for the C hook, as scalar i1 sites are.
    filecheck(text, """
CHECK:      %[[E:.*]] = llvm.extractelement %{{.*}}[%{{.*}} : i64] {{.*}} : vector<4xi1>
CHECK-NEXT: %[[Z:.*]] = llvm.zext %[[E]] {{.*}} : i1 to i8
CHECK-NEXT: %[[H:.*]] = llvm.call @lltfi_fi_i1(%{{.*}}, %[[Z]]) {{.*}} : (i32, i8) -> i8
CHECK-NEXT: %[[T:.*]] = llvm.trunc %[[H]] {{.*}} : i8 to i1
CHECK-NEXT: llvm.insertelement %[[T]], %{{.*}} : vector<4xi1>
""", tmp_path)


def test_escaping_block_calls_hooks_inline(tmp_path):
    text, result = instrument(module(ESCAPING))
    assert result.inline_blocks == 1 and result.versioned_blocks == 1
    filecheck(text, """
CHECK-LABEL: llvm.func @run
CHECK:      %[[Y:.*]] = llvm.fmul
CHECK-NEXT: %[[H:.*]] = llvm.call @lltfi_fi_f32(%{{.*}}, %[[Y]])
CHECK-NOT:  llvm.cond_br
CHECK:      llvm.br ^bb1
CHECK:      ^bb1:
CHECK:      llvm.cond_br
CHECK:      llvm.fadd %[[H]], %[[H]]
""", tmp_path)


# -- executed: counts and the target enumeration -------------------------------------------------------
@pytest.mark.parametrize("kernel", ["NEST", "ESCAPING", "VECTORS"])
@pytest.mark.parametrize("options", [{}, {"max_nest_instances": 5}, {"version_loop_nests": False},
                                     {"selector": SiteSelector(register="all")},
                                     {"selector": SiteSelector(opcodes=GROUPS["all"], register="all")}],
                         ids=["nests", "split", "blocks", "all-registers", "everything"])
def test_every_target_is_the_kth_instance_of_the_fully_hooked_build(kernel, options, tmp_path):
    text = module(globals()[kernel])
    instrumented, result = instrument(text, **options)
    run = execute(instrumented, result, tmp_path)
    check_counts(run, result, visible="selector" not in options)  # some source faults are masked
    selector = {"selector": options["selector"]} if "selector" in options else {}
    assert enumeration(run, result) == reference(text, tmp_path, **selector)


def test_nest_with_two_site_blocks_counts_each_instance_once(tmp_path):
    """Issue 9: each site block got its own partial versioning (fast paths 24, hooks 12)."""
    text, result = instrument(module(NEST))
    run = execute(text, result, tmp_path)
    assert run.consumed == sum(run.hooks) == 15 and run.units == [1]
    split_text, split = instrument(module(NEST), max_nest_instances=5)  # the inner loop, and ^outer_latch
    assert sorted(map(sorted, (u.items() for u in split.units))) == [[(0, 1)], [(1, 4)]]
    assert execute(split_text, split, tmp_path).units == [3, 3]


def test_vector_lanes_are_the_scalar_instances_in_lane_order(tmp_path):
    text, result = instrument(module(VECTORS))
    run = execute(text, result, tmp_path)
    check_counts(run, result)
    assert sorted(result.units[0].values()) == [16]  # the nest: 4 iterations x 4 lanes
    buf = np.float32(1.0) + np.float32(0.375) * np.arange(64, dtype=np.float32)
    expected = [("fmul", int((x * x).view(np.uint32))) for x in buf[:16]]
    expected += [("fadd", int((x + x).view(np.uint32))) for x in buf[16:19]]
    expected += [("fcmp", int(x < 9.0)) for x in buf[20:24]]
    assert [(site[1], bits) for site, bits in enumeration(run, result)] == expected


def test_block_order_does_not_change_the_result(tmp_path):
    text = module(NEST)
    base, result = instrument(text)
    run = execute(base, result, tmp_path)
    for seed in range(3):
        other = module(shuffled(NEST, seed))
        assert other != text
        with ir.Context():
            parsed = ir.Module.parse(other)
            loops = analyze(parsed.body.operations[0].regions[0]).loops
            assert [len(lp.blocks) for lp in loops] == [5] and [lp.trip for lp in loops[0].children] == [4]
        moved, moved_result = instrument(other)
        assert (moved_result.sites, moved_result.units) == (result.sites, result.units)
        assert execute(moved, moved_result, tmp_path).targets == run.targets


def test_dominance_and_loops_of_a_diamond_in_a_loop():
    text = module("""
llvm.func @f(%n: i64, %c: i1) {
  %c0 = llvm.mlir.constant(0 : i64) : i64
  %c1 = llvm.mlir.constant(1 : i64) : i64
  %c8 = llvm.mlir.constant(8 : i64) : i64
  llvm.br ^h(%c0 : i64)
^h(%i: i64):
  %t = llvm.icmp "slt" %i, %c8 : i64
  llvm.cond_br %t, ^a, ^exit
^a:
  llvm.cond_br %c, ^b, ^d
^b:
  llvm.br ^latch
^d:
  llvm.br ^latch
^latch:
  %i1 = llvm.add %i, %c1 : i64
  llvm.br ^h(%i1 : i64)
^exit:
  llvm.return
}""")
    with ir.Context():
        parsed = ir.Module.parse(text)
        cfg = analyze(parsed.body.operations[0].regions[0])
        (loop,) = cfg.loops
        entry = cfg.blocks[0]
        assert loop.trip == 8 and loop.preheader == entry and len(loop.blocks) == 5 and loop.header == cfg.blocks[1]
        fork = next(b for b in loop.blocks if b not in (loop.header, loop.latch) and len(b.successors) == 2)
        arms = [b for b in loop.blocks if b not in (loop.header, loop.latch, fork)]
        assert cfg.dominates(fork, loop.latch) and not cfg.dominates(loop.latch, loop.header)
        for arm in arms:  # each arm runs on some iterations only
            assert cfg.dominates(fork, arm) and not cfg.dominates(arm, loop.latch)
        assert all(cfg.dominates(entry, b) for b in cfg.blocks)
        assert compute_counts(loop, {fork: 2}, cfg) == 16 and compute_counts(loop, {arms[0]: 1}, cfg) is None


def test_op_by_op_clone_gives_the_same_module(monkeypatch):
    """Loop nests are cloned as one region in C++ unless that would move too many blocks; the
    op-by-op fallback must print the very same module."""
    import lltfi_mlir.dialect_passes.instrument_sites as pass_module

    printed = []
    for limit in (pass_module.MAX_MOVED_BLOCKS, 0):
        monkeypatch.setattr(pass_module, "MAX_MOVED_BLOCKS", limit)
        with ir.Context():
            parsed = ir.Module.parse(module(NEST))
            result = InstrumentSitesPass(node_info=NODES).apply(parsed)
            assert result.versioned_nests >= 1
            printed.append((parsed.operation.get_asm(enable_debug_info=True), result.units))
    assert printed[0] == printed[1]


# -- a second application -------------------------------------------------------------------------------
def test_second_application_is_idempotent():
    with ir.Context():
        once = ir.Module.parse(module(NEST))
        first = InstrumentSitesPass(node_info=NODES).apply(once)
        twice = ir.Module.parse(once.operation.get_asm(enable_debug_info=True))  # as instrument.py stores it
        second = InstrumentSitesPass(node_info=NODES).apply(twice)
        assert twice.operation.get_asm(enable_debug_info=True) == once.operation.get_asm(enable_debug_info=True)
        assert (second.sites, second.units, second.kept_sites) == (first.sites, first.units, 2)


def test_second_application_adds_sites_after_the_first_and_stays_exact(tmp_path):
    text = module(NEST)
    with ir.Context():
        mod = ir.Module.parse(text)
        first = InstrumentSitesPass(SiteSelector(opcodes=frozenset({"fmul"})), NODES,
                                    version_loop_nests=False).apply(mod)
        second = InstrumentSitesPass(SiteSelector(opcodes=frozenset({"fadd"})), NODES,
                                     max_nest_instances=5).apply(mod)
        assert mod.operation.verify()
        twice = str(mod)
    assert [(s.id, s.opcode) for s in first.sites] == [(0, "fmul")]
    assert [(s.id, s.opcode) for s in second.sites] == [(0, "fmul"), (1, "fadd")] and second.kept_sites == 1
    assert len(second.units) == 2
    filecheck(twice, """
CHECK-COUNT-1: @lltfi_unit_counts() {{.*}} : !llvm.array<2 x i64>
CHECK-NOT:     @lltfi_unit_counts()
""", tmp_path)
    run = execute(twice, second, tmp_path)
    check_counts(run, second)
    union = SiteSelector(opcodes=frozenset({"fmul", "fadd"}))
    assert enumeration(run, second) == reference(text, tmp_path, selector=union)


@pytest.mark.parametrize("kernel", ["NEST", "ESCAPING", "VECTORS"])
def test_second_application_never_selects_its_own_ops(kernel, tmp_path):
    """Every opcode and register: the countdown's loads, compares, stores and the hook calls of the
    first application would all match, but are stripped and never become sites."""
    everything = SiteSelector(opcodes=GROUPS["all"], register="all")
    with ir.Context():
        mod = ir.Module.parse(module(globals()[kernel]))
        first = InstrumentSitesPass(everything, NODES).apply(mod)
        hooks = str(mod).count("llvm.call @lltfi_fi_")
        second = InstrumentSitesPass(everything, NODES).apply(mod)
        assert mod.operation.verify()
        assert (second.sites, second.units, second.kept_sites) == (first.sites, first.units, len(first.sites))
        assert str(mod).count("llvm.call @lltfi_fi_") == hooks
        text = str(mod)
    check_counts(execute(text, second, tmp_path), second, visible=False)


def test_sites_without_lanes_load_as_scalar():
    row = {"id": 0, "function": "f", "opcode": "fmul", "type": "f32", "register": "dst", "node": None,
           "op_type": None, "layer": None, "source": None}
    assert Site(**row).lanes == 1 and Site(**row).row() == {**row, "lanes": 1, "instruction": None}
