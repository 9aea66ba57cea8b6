"""Instrumenting in two processes (lltfi_mlir/instrument_parts.py) builds the same program as one
process: the same sites, units and functions, and a campaign on it gives the same rows."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lltfi_mlir.dialect_passes.sites import SiteSelector
from mlir import ir

import lltfi_mlir.instrument as instrument
from lltfi_mlir import compile_onnx
from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.instrument_parts import split_point, splittable

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _functions(text: str) -> dict[str, str]:
    """Each defined function's text, by name (the halves order the module's declarations otherwise)."""
    with ir.Context():
        module = ir.Module.parse(text)
        return {ir.StringAttr(op.operation.attributes["sym_name"]).value: str(op)
                for op in module.body.operations
                if op.operation.name == "llvm.func" and len(op.operation.regions[0].blocks)}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The LeNet example instrumented in two processes (in a fresh interpreter: halves fork only from
    a process without other threads, and a test session may have some) and in one."""
    root = tmp_path_factory.mktemp("halves")
    out = {}
    for name in ("halves", "one"):
        build = compile_onnx(EXAMPLES / "lenet_fmnist" / "model.onnx", root / name)
        if name == "halves":
            script = ("import sys; from pathlib import Path; from lltfi_mlir.build import Build; "
                      "from lltfi_mlir.instrument import instrument_build; "
                      "from lltfi_mlir.dialect_passes.sites import SiteSelector; "
                      "instrument_build(Build(Path(sys.argv[1])), SiteSelector())")
            subprocess.run([sys.executable, "-c", script, str(build.directory)], check=True)
            out[name] = instrument.instrument_build(build, SiteSelector())  # cached: read back
        else:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(instrument, "_in_halves", lambda *args: False)
                out[name] = instrument.instrument_build(build, SiteSelector())
    return out


def test_halves_only_from_a_process_without_other_threads(builds):
    from lltfi_mlir.build import Build

    built = builds["halves"]
    with ir.Context():
        module = ir.Module.parse(built.ir_text())
        plain = ir.Module.parse((built.build.directory / "model.llvm.mlir").read_text())
        backend = {"ir_opt": True}
        assert not instrument._in_halves(Build(built.build.directory), backend, module, SiteSelector())  # instrumented
        # Static instruction indices are numbered across the whole module: one process.
        assert not instrument._in_halves(Build(built.build.directory), backend, plain,
                                         SiteSelector(instructions=frozenset({3})))
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        try:
            assert not instrument._in_halves(Build(built.build.directory), backend, plain, SiteSelector())
        finally:
            stop.set()
            other.join()


def test_the_example_is_built_in_halves(builds):
    assert (builds["halves"].directory / "model.llvm.part1.mlirbc").exists()
    assert (builds["one"].directory / "model.llvm.mlirbc").exists()
    assert len(list(builds["halves"].directory.glob("*.o"))) == 4  # hot and cold code of each half


def test_halves_give_the_same_sites_units_and_functions(builds):
    halves, one = builds["halves"], builds["one"]
    assert halves.sites == one.sites
    assert halves.units == one.units and halves.units and all(halves.units)
    assert (halves.versioned_blocks, halves.inline_blocks, halves.versioned_nests, halves.boundaries) == \
        (one.versioned_blocks, one.inline_blocks, one.versioned_nests, one.boundaries)
    assert _functions(halves.ir_text()) == _functions(one.ir_text())


def test_campaign_rows_are_the_same(builds, tmp_path):
    rows = {}
    for name, built in builds.items():
        campaign = Campaign.from_build(built.build.directory, CampaignConfig(seed=7),
                                       EXAMPLES / "lenet_fmnist" / "inputs", db=tmp_path / f"{name}.db", jobs=2)
        campaign.run(300, progress=False)
        assert campaign.instrumented.directory == built.directory
        query = ("SELECT id, target, site, dyn_index, bit, status, outcome, value_before, value_after, masked_at "
                 "FROM trials ORDER BY id")
        rows[name] = sqlite3.connect(tmp_path / f"{name}.db").execute(query).fetchall()
    assert len(rows["halves"]) == 300 and rows["halves"] == rows["one"]


def test_split_point_balances_code():
    assert split_point([20, 20, 5, 60]) == 3  # 45 against 60: the big function alone
    assert split_point([100, 1, 1]) == 1 and split_point([1, 1, 100]) == 2  # never an empty half


def test_a_local_function_keeps_the_module_whole():
    with ir.Context():
        module = ir.Module.parse("llvm.func internal @f() {\n  llvm.return\n}\nllvm.func @g() {\n  llvm.return\n}")
        assert not splittable(module)
        module = ir.Module.parse("llvm.mlir.global internal @counter(0 : i64) : i64\nllvm.func @g() {\n"
                                 "  llvm.return\n}")
        assert not splittable(module)
        module = ir.Module.parse("llvm.mlir.global private constant @c(1.0 : f32) : f32\nllvm.func @g() {\n"
                                 "  llvm.return\n}")
        assert splittable(module)


@pytest.mark.parametrize("operator", ["Conv", "Gemm"])
def test_a_selection_in_one_half_only(builds, operator):
    """Sites in one half only (Conv early, Gemm late): the other half still numbers after them."""
    selector = SiteSelector(operators=frozenset({operator}))
    script = ("import sys; from pathlib import Path; from lltfi_mlir.build import Build; "
              "from lltfi_mlir.instrument import instrument_build; "
              "from lltfi_mlir.dialect_passes.sites import SiteSelector; "
              "instrument_build(Build(Path(sys.argv[1])), SiteSelector(operators=frozenset({sys.argv[2]})))")
    directory = builds["halves"].build.directory
    subprocess.run([sys.executable, "-c", script, str(directory), operator], check=True)
    halves = instrument.instrument_build(builds["halves"].build, selector)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(instrument, "_in_halves", lambda *args: False)
        one = instrument.instrument_build(builds["one"].build, selector)
    assert (halves.directory / "model.llvm.part1.mlirbc").exists()
    assert halves.sites and {s.op_type for s in halves.sites} == {operator}
    assert (halves.sites, halves.units) == (one.sites, one.units)
    assert _functions(halves.ir_text()) == _functions(one.ir_text())


GARBAGE_CONTEXT = """
import gc, sys
from pathlib import Path
from mlir import ir
from lltfi_mlir.build import Build
from lltfi_mlir.instrument import instrument_build
from lltfi_mlir.dialect_passes.sites import SiteSelector
context = ir.Context()
context.enable_multithreading(True)
with context:  # verifying several functions in parallel starts the context's LLVM thread pool
    module = ir.Module.parse("\\n".join(f"llvm.func @f{i}() {{\\n  llvm.return\\n}}" for i in range(64)))
cycle = [context, module]
cycle.append(cycle)
del context, module
gc.collect()  # the cycle survives into the oldest generation, where only a full collection looks
del cycle     # garbage now, with its pool's threads running
built = instrument_build(Build(Path(sys.argv[1])), SiteSelector(operators=frozenset({"Relu"})))
print(built.directory)
"""


def test_halves_survive_an_uncollected_context_with_threads(builds):
    """An earlier MLIR context, garbage in the oldest generation, keeps its thread pool running. In
    the benchmark a child's full collection destroyed such a context and waited for the pool's
    threads forever (gdb: ~StdThreadPool in the child). Whether a child collects it depends on
    allocation counts, so this cannot force the hang; it checks that the halves finish with such
    a context around (the parent now collects before forking, and the child never does)."""
    directory = builds["halves"].build.directory
    done = subprocess.run([sys.executable, "-c", GARBAGE_CONTEXT, str(directory)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (Path(done.stdout.strip()) / "model.llvm.part1.mlirbc").exists()
