"""Hostile inputs against the native side (issue 13): names from the model never become C or assembly,
the .npy reader and writer hold against malformed files (fuzzed against numpy's own parser, run under
AddressSanitizer + UndefinedBehaviorSanitizer), and no fixed-size table limits outputs or input sets."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_model, ort_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lltfi_mlir.llvm_backend.glue import quoted_string
from lltfi_mlir.runtime import SOURCE_DIR
from native_helpers import (
    SANITIZER_ENV,
    fake_model_build,
    result_bytes,
    sanitized_runtime,
    sanitizer_report,
    trial_line,
)
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir.compiler import CompileOptions, compile_onnx

HOSTILE = ('x", 2, in0_shape, 4}}; extern int system(const char*); __attribute__((constructor)) static void '
           'pwn(void){system("id > PWNED");} static const lltfi_tensor_info zz[] = {{"')
HOSTILE_WEIGHT = 'w"\n\t.globl evil\nevil: .incbin "/etc/passwd" # \\'
NATIVE = Path(__file__).parent / "native"


def _hostile_model(with_mid_output: bool = False) -> onnx.ModelProto:
    """MatMul -> Relu whose input, intermediate, output, node and weight names are code."""
    w = (np.arange(4 * 32, dtype=np.float32).reshape(4, 32) - 60) / 50  # > 64 elements: a .incbin weight
    outputs = [helper.make_tensor_value_info("y" + HOSTILE, TensorProto.FLOAT, [2, 32])]
    if with_mid_output:
        outputs.append(helper.make_tensor_value_info("mid" + HOSTILE, TensorProto.FLOAT, [2, 32]))
    nodes = [helper.make_node("MatMul", [HOSTILE, HOSTILE_WEIGHT], ["mid" + HOSTILE], name="mm" + HOSTILE),
             helper.make_node("Relu", ["mid" + HOSTILE], ["y" + HOSTILE], name="relu" + HOSTILE)]
    return make_model(nodes, [helper.make_tensor_value_info(HOSTILE, TensorProto.FLOAT, [2, 4])], outputs,
                      [numpy_helper.from_array(w, HOSTILE_WEIGHT)])


@pytest.fixture(scope="module")
def hostile_build(tmp_path_factory):
    """The hostile model, traced, built in a folder whose path needs quoting too."""
    out = tmp_path_factory.mktemp("native") / 'build "dir\\ x'
    return compile_onnx(_hostile_model(), out, CompileOptions(trace=True, codegen="reference"))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """tests/native/npy_harness.c with runtime/npy.c, under ASan + UBSan."""
    exe = tmp_path_factory.mktemp("harness") / "npy_harness"
    subprocess.run(["cc", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-g",
                    "-I", str(SOURCE_DIR), str(NATIVE / "npy_harness.c"), str(SOURCE_DIR / "npy.c"), "-o", str(exe)],
                   check=True)
    return exe


def _read(harness: Path, paths: list[Path], max_bytes: int = 1 << 20) -> list[str]:
    proc = subprocess.run([str(harness), "read", str(max_bytes), *map(str, paths)], capture_output=True, text=True,
                          env=SANITIZER_ENV, timeout=60)
    assert proc.returncode == 0 and not sanitizer_report(proc.stderr), proc.stderr
    return proc.stdout.splitlines()


# -- names ---------------------------------------------------------------------------------------------------------

def test_hostile_names_stay_data(hostile_build, tmp_path):
    """Input, output, intermediate (--trace layers) and weight names that are C/assembly: the build runs no
    injected code and computes what onnxruntime computes, every traced layer included."""
    glue = (hostile_build.directory / "glue.c").read_text()
    asm = (hostile_build.directory / "weights.S").read_text()
    assert "system" not in glue and "PWNED" not in glue
    assert all(line.startswith(("\t.", "__constant_", "lltfi_")) for line in asm.splitlines())  # no injected line
    assert [t.name for t in hostile_build.inputs] == [HOSTILE]  # the names live in manifest.json
    assert [t["tensor"] for t in hostile_build.traced] == ["mid" + HOSTILE, "y" + HOSTILE]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = [tmp_path / f"o{i}.npy" for i in range(3)]  # the output, then the traced layers
    args = [str(hostile_build.executable), "--input", "x.npy"] + [a for p in outs for a in ("--output", p.name)]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
    mid, y = ort_run(_hostile_model(with_mid_output=True), {HOSTILE: x})[::-1]
    for path, want in zip(outs, [y, mid, y]):
        np.testing.assert_allclose(np.load(path), want, rtol=1e-5, atol=1e-6)


def test_quoted_string_round_trips_through_c(tmp_path):
    """The one escaper (C strings and .incbin paths): what the compiler reads back is the text, byte for byte."""
    texts = [HOSTILE, HOSTILE_WEIGHT, "a\\", "??=define", "*/ /* //", "\n#include <stdio.h>\n", "é\t\x7f\x01", "%s%n"]
    decls = "\n".join(f"static const char s{i}[] = {quoted_string(t)};" for i, t in enumerate(texts))
    writes = "\n".join(f"  fwrite(s{i}, 1, sizeof s{i} - 1, stdout); putchar(0);" for i in range(len(texts)))
    (tmp_path / "t.c").write_text(f"#include <stdio.h>\n{decls}\nint main(void) {{\n{writes}\n  return 0;\n}}\n")
    subprocess.run(["cc", "-Wall", "-Werror", "-trigraphs", str(tmp_path / "t.c"), "-o", str(tmp_path / "t")],
                   check=True)
    got = subprocess.run([str(tmp_path / "t")], capture_output=True, check=True).stdout
    assert got.split(b"\0")[:-1] == [t.encode() for t in texts]


def test_quoted_string_is_an_incbin_path_for_the_assembler(tmp_path):
    """weights.S: a path holding a quote, a backslash, a newline and a comment sign still names its file."""
    blob = tmp_path / 'w "x\\y\n# z.bin'
    blob.write_bytes(b"\x01\x02weights\xff")
    (tmp_path / "w.S").write_text(f"\t.section .rodata\n\t.globl blob\nblob:\n\t.incbin {quoted_string(str(blob))}\n"
                                  "\t.globl blob_end\nblob_end:\n\t.section .note.GNU-stack,\"\",@progbits\n")
    (tmp_path / "m.c").write_text("#include <stdio.h>\nextern const char blob[], blob_end[];\n"
                                  "int main(void) { fwrite(blob, 1, blob_end - blob, stdout); return 0; }\n")
    subprocess.run(["cc", str(tmp_path / "m.c"), str(tmp_path / "w.S"), "-o", str(tmp_path / "m")], check=True)
    assert subprocess.run([str(tmp_path / "m")], capture_output=True, check=True).stdout == blob.read_bytes()


# -- .npy reader and writer ----------------------------------------------------------------------------------------

def _npy(header: str, version: int = 1, data: bytes = b"", hlen: int | None = None) -> bytes:
    text = header.encode("latin-1")
    n = len(text) if hlen is None else hlen
    prefix = b"\x93NUMPY" + bytes([version, 0]) + (struct.pack("<H", n) if version == 1 else struct.pack("<I", n))
    return prefix + text + data


HOSTILE_NPY = {  # issue 13's files -> the one-line reason
    "v2_header_0xffffffff": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 2, bytes(8),
                                  0xFFFFFFFF), "header of 4294967295 bytes"),
    "negative_dim": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 784), }", 1, bytes(64)),
                     "negative dimension"),
    "unchecked_malloc": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000, 1000), }"),
                         "more than the"),
    "signed_overflow": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
                        "shape too large"),
    "fortran_no_space": (_npy("{'descr': '<f4', 'fortran_order':True, 'shape': (2, 4), }", 1, bytes(32)),
                         "Fortran-order"),
    "truncated_data": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", 1, bytes(31)),
                       "truncated data"),
    "truncated_header": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }")[:30], "truncated header"),
    "version_9": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", 9), "format version"),
    "big_endian": (_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 4), }", 1, bytes(32)),
                   "unsupported dtype"),
    "object": (_npy("{'descr': '|O', 'fortran_order': False, 'shape': (2, 4), }", 1, bytes(64)), "unsupported dtype"),
    "not_npy": (b"PK\x03\x04 a zip file", "not a .npy file"),
}


def test_npy_reader_refuses_hostile_files(harness, tmp_path):
    paths = []
    for name, (blob, _) in HOSTILE_NPY.items():
        paths.append(tmp_path / f"{name}.npy")
        paths[-1].write_bytes(blob)
    for path, line in zip(paths, _read(harness, paths, max_bytes=32)):
        assert line.startswith("error ") and HOSTILE_NPY[path.stem][1] in line, (path.stem, line)


def test_model_refuses_hostile_inputs(hostile_build, tmp_path):
    """The standalone `model --input`: a one-line error and exit status 2 for every hostile file."""
    for name, (blob, reason) in HOSTILE_NPY.items():
        if name == "unchecked_malloc":  # a valid header: the mismatch is the message, before any allocation
            reason = "expected float32 of shape 2x4, got float32 of shape 1000000x1000000x1000"
        (tmp_path / "x.npy").write_bytes(blob)
        proc = subprocess.run([str(hostile_build.executable), "--input", str(tmp_path / "x.npy")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and reason in proc.stderr, (name, proc.stderr)
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float64))
    proc = subprocess.run([str(hostile_build.executable), "--input", str(tmp_path / "x.npy")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "expected float32 of shape 2x4, got float64 of shape 2x4" in proc.stderr


SUPPORTED = ["<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1", "<u2", "<u4", "<u8"]
_SPACE = st.sampled_from(["", " ", "  ", "\t", "\n"])
_DIM = st.one_of(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6),
                 st.sampled_from([-1, -2, 2**31, 2**32, 2**62, 2**64, 10**20]))


@st.composite
def _header(draw) -> tuple[str, int, bytes]:
    """A header numpy may or may not accept: valid ones in every spelling, near misses, and corruptions."""
    quote = draw(st.sampled_from(["'", '"']))
    descr = draw(st.sampled_from(SUPPORTED * 3 + [">f4", "f4", "<f16", "|O", "<U3", "", "<c8", "float32"]))
    order = draw(st.sampled_from(["False"] * 6 + ["True", "1", "false", "Falsey", "None"]))
    dims = draw(st.lists(_DIM, max_size=5) | st.just([1] * 17))
    inner = ("," + draw(_SPACE)).join(str(d) for d in dims)
    trailing = draw(st.booleans()) or len(dims) == 1
    shape = draw(st.sampled_from(["({})"] * 8 + ["[{}]", "({}"])).format(inner + ("," if trailing and dims else ""))
    if draw(st.integers(0, 9)) == 0:
        shape = draw(st.sampled_from(["(3)", "(2 3)", "(2.0,)", "(03,)", "(+ 3,)", "(-0,)", "()", "(00,)"]))
    items = [("descr", f"{quote}{descr}{quote}"), ("fortran_order", order), ("shape", shape)]
    items = draw(st.permutations(items))
    if draw(st.integers(0, 9)) == 0:
        items = items[:draw(st.integers(0, 2))] + draw(st.sampled_from([[], [("extra", "1")], [items[0]]]))
    text = "{" + ("," + draw(_SPACE)).join(
        f"{quote}{k}{quote}{draw(_SPACE)}:{draw(_SPACE)}{v}" for k, v in items)
    text += ("," if draw(st.booleans()) else "") + draw(_SPACE) + "}" + " " * draw(st.integers(0, 70)) + "\n"
    if draw(st.integers(0, 5)) == 0:  # a corruption: a cut, or one more character
        at = draw(st.integers(0, len(text)))
        cut = draw(st.booleans())
        text = text[:at] + ("" if cut else draw(st.sampled_from(list("{}(),: .9T\t\n[]"))) + text[at:])
    count = int(np.prod(dims)) if all(0 <= d <= 1024 for d in dims) else 0
    size = np.dtype(descr).itemsize if descr in SUPPORTED else 4
    length = draw(st.sampled_from([count * size, count * size + 3, max(0, count * size - 1), 1024]))
    data = draw(st.binary(min_size=min(length, 4096), max_size=min(length, 4096)))
    if descr == "|b1":
        data = bytes(b % 2 for b in data)
    return text, draw(st.sampled_from([1, 2, 3])), data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.lists(_header(), min_size=8, max_size=8))
def test_npy_header_fuzz_agrees_with_numpy(harness, tmp_path, headers):
    """Whatever numpy reads (in a supported dtype, C order, rank <= 16) the reader reads alike; whatever
    numpy refuses, the reader refuses; no input upsets the sanitizers."""
    paths = []
    for i, (text, version, data) in enumerate(headers):
        paths.append(tmp_path / f"h{i}.npy")
        paths[-1].write_bytes(_npy(text, version, data))
    for path, (text, _, data), line in zip(paths, headers, _read(harness, paths)):
        try:
            want = np.load(path, allow_pickle=False, max_header_size=1 << 20)
        except Exception:  # noqa: BLE001  (numpy raises many kinds; any means refused)
            want = None
        if want is None:
            assert line.startswith("error "), (text, line)
        elif line.startswith("error "):  # stricter than numpy only where documented
            assert any(why in line for why in ("unsupported dtype", "Fortran-order", "rank above 16")), (text, line)
        else:
            fields = ["ok", want.dtype.str, str(want.nbytes), *map(str, want.shape), f"sum={sum(data[:want.nbytes])}"]
            assert line == " ".join(fields), (text, line)


@pytest.mark.parametrize("descr", SUPPORTED)
def test_npy_writer_round_trips(harness, tmp_path, descr):
    """Every dtype, ranks 0 to 16, and a 16-dimension header longer than the old 256-byte buffer."""
    for shape in [(), (3,), (2, 3), (1,) * 16, (1,) * 14 + (0, 10**17)]:
        path = tmp_path / "w.npy"
        proc = subprocess.run([str(harness), "write", str(path), descr, *map(str, shape)], env=SANITIZER_ENV,
                              capture_output=True, text=True)
        assert proc.returncode == 0 and not sanitizer_report(proc.stderr), proc.stderr
        got = np.load(path)
        assert got.shape == shape and got.dtype == np.dtype(descr) and got.flags.c_contiguous
        raw = np.arange(got.nbytes, dtype=np.uint64) % (2 if descr == "|b1" else 256)
        assert got.tobytes() == raw.astype(np.uint8).tobytes()
        assert (16 + len(path.read_bytes()) - got.nbytes) % 64 == 16  # header padded to 64 bytes, as numpy does


# -- sanitizers over a real model ------------------------------------------------------------------------------------

def test_model_runs_clean_under_sanitizers(hostile_build, tmp_path):
    """The hostile model's own object code linked with the runtime built under ASan + UBSan: a run, the
    hostile inputs, the profile, the fork-server and the walk engine."""
    objects = sanitized_runtime(tmp_path / "obj")
    exe = tmp_path / "model"
    d = hostile_build.directory
    subprocess.run(["cc", "-O1", "-fsanitize=address,undefined", "-I", str(SOURCE_DIR), str(d / "glue.c"),
                    *map(str, sorted(d.glob("model*.o"))), str(d / "weights.o"), *map(str, objects), "-o", str(exe),
                    "-lm"],
                   check=True)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)

    def run(*args, stdin=None, status=0):
        proc = subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True, env=SANITIZER_ENV,
                              timeout=60)
        assert proc.returncode == status and not sanitizer_report(proc.stderr), proc.stderr
        return proc.stdout

    run("--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), hostile_build.run([x])[0])
    for blob, _ in HOSTILE_NPY.values():
        (tmp_path / "bad.npy").write_bytes(blob)
        run("--input", str(tmp_path / "bad.npy"), status=2)
    (tmp_path / "inputs.txt").write_text(f"{tmp_path / 'x.npy'}\n{tmp_path / 'x.npy'}\n")
    golden = np.load(tmp_path / "y.npy").tobytes()
    assert golden in bytes.fromhex(run("--profile", "--inputs-list", str(tmp_path / "inputs.txt"), "--repeat", "1")
                                   .split()[-1])
    served = run("--serve", "--inputs-list", str(tmp_path / "inputs.txt"), stdin=trial_line(7, 1)).splitlines()
    assert served[0] == "READY 2" and result_bytes(served[1]).startswith(golden)
    walked = run("--walk", "--inputs-list", str(tmp_path / "inputs.txt"), stdin=trial_line(8, 0) + "walk\n")
    assert result_bytes(walked.splitlines()[1]) == result_bytes(served[1])


# -- no fixed tables ---------------------------------------------------------------------------------------------------

def test_more_than_1024_outputs_and_4096_input_sets(tmp_path):
    """1,100 outputs (a traced chain's layers) through every mode; 5,000 input sets all loaded."""
    n = 1100
    outputs = [(f"t{i}", (2,), "float32") for i in range(n)]
    body = "for (int i = 0; i < 1100; i++) for (int k = 0; k < 2; k++) ((float *)out[i])[k] = ((float *)in[0])[k] + i;"
    build = fake_model_build(tmp_path / "b", [("x", (2,), "float32")], outputs, body)
    x = np.array([0.5, -1.0], np.float32)
    want = np.stack([x + i for i in range(n)])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x2.npy", x + 1000)
    args = [str(build.executable), "--input", str(tmp_path / "x.npy")]
    for i in range(n):
        args += ["--output", str(tmp_path / f"o{i}.npy")]
    subprocess.run(args, check=True, timeout=60)
    np.testing.assert_array_equal(np.stack([np.load(tmp_path / f"o{i}.npy") for i in range(n)]), want)
    (tmp_path / "inputs.txt").write_text(f"{tmp_path / 'x.npy'}\n" * 4999 + f"{tmp_path / 'x2.npy'}\n")
    served = subprocess.run([str(build.executable), "--serve", "--inputs-list", str(tmp_path / "inputs.txt")],
                            input=trial_line(1, 4999) + trial_line(2, 0), capture_output=True, text=True,
                            timeout=60, check=True).stdout.splitlines()
    assert served[0] == "READY 5000"
    assert result_bytes(served[1]) == (want + 1000).tobytes() and result_bytes(served[2]) == want.tobytes()
    walked = subprocess.run([str(build.executable), "--walk", "--inputs-list", str(tmp_path / "inputs.txt")],
                            input=trial_line(3, 4999) + "walk\n", capture_output=True, text=True, timeout=60,
                            check=True).stdout.splitlines()
    assert walked[0] == "READY 5000" and result_bytes(walked[1]) == (want + 1000).tobytes()
    (tmp_path / "two.txt").write_text(f"{tmp_path / 'x.npy'}\n{tmp_path / 'x2.npy'}\n")
    profile = subprocess.run([str(build.executable), "--profile", "--inputs-list", str(tmp_path / "two.txt"),
                              "--repeat", "1", "--no-check"], capture_output=True, text=True, timeout=120,
                             check=True).stdout.splitlines()
    assert len(profile) == 2 and bytes.fromhex(profile[-1].split()[-1]) == (want + 1000).tobytes()


@pytest.mark.slow
def test_traced_1100_node_chain(tmp_path):
    """The issue's case through the whole compiler: a 1,100-node chain compiled with --trace layers."""
    nodes, prev = [], "x"
    for i in range(1100):
        nodes.append(helper.make_node("Neg" if i % 2 == 0 else "Relu", [prev], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                       [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [2])])
    build = compile_onnx(model, tmp_path / "b", CompileOptions(trace=True, codegen="reference"))
    assert len(build.all_outputs) == 1101
    x = np.array([1.5, -2.0], np.float32)
    np.save(tmp_path / "x.npy", x)
    args = [str(build.executable), "--input", str(tmp_path / "x.npy")]
    for i in range(1101):
        args += ["--output", str(tmp_path / f"o{i}.npy")]
    subprocess.run(args, check=True, timeout=120)
    value = x
    for i in range(1100):
        value = -value if i % 2 == 0 else np.maximum(value, 0)
        np.testing.assert_array_equal(np.load(tmp_path / f"o{i + 1}.npy"), value)
    np.testing.assert_array_equal(np.load(tmp_path / "o0.npy"), value)


def test_program_driver_output_files_stay_in_the_working_directory(tmp_path):
    """--output-file names are unlinked and read after every run: a path out of the private working
    directory, or more names than the driver holds, is refused (status 2), never dropped or followed."""
    from lltfi_mlir.compiler import compile_program

    (tmp_path / "p.c").write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    build = compile_program([tmp_path / "p.c"], tmp_path / "b")
    for name in ("../victim", "/etc/passwd", "..", ""):
        proc = subprocess.run([str(build.executable), "--lltfi-serve", "--output-file", name, "--"],
                              input="", capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "give a file name in the working directory" in proc.stderr, name
    many = [a for i in range(65) for a in ("--output-file", f"f{i}")]
    proc = subprocess.run([str(build.executable), "--lltfi-serve", *many, "--"], input="", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "more than 64 --output-file" in proc.stderr
