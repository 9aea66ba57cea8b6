"""Weight faults (fault target `weights`) against truth computed independently: an exhaustive
campaign over every (element, bit) of a MatMul+Add model's stored weights, redone in numpy."""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import onnx
import pytest
from conftest import make_model, ort_run
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir import compile_onnx
from lltfi_mlir.campaign import Campaign
from lltfi_mlir.campaign.config import parse_config
from lltfi_mlir.campaign.memory import source_element
from lltfi_mlir.campaign.replay import replay_trial
from lltfi_mlir.cli import main
from lltfi_mlir.errors import ConfigError, UsageError

RNG = np.random.default_rng(11)
X = RNG.standard_normal((1, 2)).astype(np.float32)
W = RNG.standard_normal((2, 65)).astype(np.float32)   # 130 elements: stored in weights.S
B = RNG.standard_normal((65,)).astype(np.float32)     # 65 elements: stored too (more than 64)


def matmul_add() -> onnx.ModelProto:
    return make_model([helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
                       helper.make_node("Add", ["h", "B"], ["y"], name="add")],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 65])],
                      [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])


def numpy_model(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The compiled arithmetic in float32: acc = 0; acc += x[k] * w[k, n] for k in order; + b[n]."""
    with np.errstate(all="ignore"):
        acc = np.zeros(w.shape[1], np.float32)
        for k in range(w.shape[0]):
            acc = (acc + (X[0, k] * w[k]).astype(np.float32)).astype(np.float32)
        return (acc + b).astype(np.float32)


def flipped(array: np.ndarray, element: int, bit: int) -> np.ndarray:
    out = array.copy().reshape(-1)
    out.view(np.uint32)[element] ^= np.uint32(1 << bit)
    return out.reshape(array.shape)


def w_index(build, element: int) -> int:
    """W's flat index of a stored element: the compiled MatMul keeps W in column panels, and the
    runtime reports the stored element (campaign/memory.py)."""
    (entry,) = [w for w in build.manifest["weights"] if w["tensor"] == "W"][:1]
    return source_element(entry, element)


def differs(golden: np.ndarray, faulty: np.ndarray) -> bool:
    """The `tolerance` criterion with rtol = atol = 0: any element changed (NaN equal to NaN)."""
    return bool(np.any(~((golden == faulty) | (np.isnan(golden) & np.isnan(faulty)))))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mm")
    onnx.save(matmul_add(), d / "mm.onnx")
    (d / "inputs").mkdir()
    np.save(d / "inputs" / "0.npy", X)
    return d


CONFIG = """
fault: {target: weights}
sdc: {criterion: tolerance, rtol: 0, atol: 0}
campaign: {seed: 3}
"""


def test_exhaustive_weight_campaign_matches_numpy(model_dir):
    """Every (tensor, element, bit) of W and B: SDC exactly when numpy's recomputation with that bit
    flipped changes the output; the recorded values are the stored weight's bits before and after."""
    campaign = Campaign.from_onnx(model_dir / "mm.onnx", parse_config(CONFIG), model_dir / "inputs",
                                  out_dir=model_dir / "work", jobs=2)
    summary = campaign.run(exhaustive=True, progress=False)
    assert summary["trials"] == (W.size + B.size) * 32
    golden = numpy_model(W, B)
    db = sqlite3.connect(campaign.db_path)
    assert np.array_equal(np.frombuffer(bytes.fromhex(json.loads(dict(db.execute(
        "SELECT key, value FROM meta").fetchall())["replay"])["golden"][0]), "<f4"), golden.reshape(-1))
    tensors = dict(db.execute("SELECT id, function FROM sites").fetchall())
    assert sorted(tensors.values()) == ["B", "W"]
    (entry,) = [w for w in campaign.work_build.manifest["weights"] if w["tensor"] == "W"]
    assert entry["panels"]["k"] == 2 and entry["panels"]["n"] == 65  # W in column panels, not as it is:
    assert sorted(w_index(campaign.work_build, e) for e in range(W.size)) == list(range(W.size))
    assert [w_index(campaign.work_build, e) for e in range(W.size)] != list(range(W.size))  # a permutation
    rows = db.execute("SELECT site, dyn_index, bit, mask, value_before, value_after, outcome, status "
                      "FROM trials ORDER BY id").fetchall()
    mismatches = []
    for site, element, bit, mask, before, after, outcome, status in rows:
        name = tensors[site]
        stored, index = (W, w_index(campaign.work_build, element)) if name == "W" else (B, element)
        assert int(before, 16) == int(stored.reshape(-1).view(np.uint32)[index])
        assert int(mask, 16) == 1 << bit and int(after, 16) == int(before, 16) ^ (1 << bit)
        w = flipped(W, index, bit) if name == "W" else W
        b = flipped(B, element, bit) if name == "B" else B
        expected = "sdc" if differs(golden, numpy_model(w, b)) else "benign"
        if status != "ok" or outcome != expected:
            mismatches.append((name, element, bit, status, outcome, expected))
    assert not mismatches, mismatches[:10]
    outcomes = dict(db.execute("SELECT outcome, COUNT(*) FROM trials GROUP BY outcome").fetchall())
    assert outcomes["sdc"] > 0 and outcomes["benign"] > 0  # both kinds occur: the check can fail
    # Results per tensor and per layer.
    assert set(summary["by_function"]) == {"W", "B"}
    assert set(summary["by_layer"]) == {"mm (MatMul 1)", "add (Add 1)"}
    assert summary["by_opcode"]["weight"]["trials"] == summary["trials"]
    db.close()


def test_weight_faults_with_layer_tracing(model_dir):
    """Layer tracing of weight faults: the reading layer's output has exactly the one element numpy says
    changed (W[k, n] -> h[n]; B[n] -> y[n]), and the results carry Table II."""
    config = parse_config(CONFIG.replace("seed: 3", "seed: 9, trace_layers: true"))
    campaign = Campaign.from_onnx(model_dir / "mm.onnx", config, model_dir / "inputs", out_dir=model_dir / "work",
                                  jobs=2)
    summary = campaign.run(150, progress=False)
    assert summary["propagation"]["trials"] > 0
    db = sqlite3.connect(campaign.db_path)
    tensors = dict(db.execute("SELECT id, function FROM sites").fetchall())
    traced = {(t, n): c for t, n, c in db.execute("SELECT trial, node, corrupted FROM layer_trace")}
    golden_h = numpy_model(W, np.zeros_like(B))
    for trial, site, element, bit in db.execute("SELECT id, site, dyn_index, bit FROM trials"):
        if tensors[site] == "W":
            h = numpy_model(flipped(W, w_index(campaign.work_build, element), bit), np.zeros_like(B))
            expected = 1 if differs(golden_h, h) else None
            assert traced.get((trial, "mm")) == expected, (trial, element, bit)
        else:
            expected = 1 if differs(B, flipped(B, element, bit)) else None
            assert (trial, "mm") not in traced and traced.get((trial, "add")) == expected
    db.close()


def test_exhaustive_activation_campaign_matches_numpy(model_dir):
    """Every (element, bit) of the MatMul's output buffer, flipped at its operator boundary in the
    optimized build: SDC exactly when numpy's h with that bit flipped, plus B, changes the output."""
    config = parse_config(CONFIG.replace("weights", "activations") + "select: {nodes: [mm]}\n")
    campaign = Campaign.from_onnx(model_dir / "mm.onnx", config, model_dir / "inputs", out_dir=model_dir / "work",
                                  jobs=2)
    summary = campaign.run(exhaustive=True, progress=False)
    assert summary["trials"] == 65 * 32
    h = numpy_model(W, np.zeros_like(B))
    golden = numpy_model(W, B)
    db = sqlite3.connect(campaign.db_path)
    rows = db.execute("SELECT dyn_index, bit, value_before, value_after, outcome FROM trials").fetchall()
    wrong = []
    for element, bit, before, after, outcome in rows:
        assert int(before, 16) == int(h.view(np.uint32)[element])  # the instance is the element
        assert int(after, 16) == int(before, 16) ^ (1 << bit)
        with np.errstate(all="ignore"):
            faulty = (flipped(h, element, bit) + B).astype(np.float32)
        expected = "sdc" if differs(golden, faulty) else "benign"
        if outcome != expected:
            wrong.append((element, bit, outcome, expected))
    assert not wrong, wrong[:10]
    assert set(summary["by_layer"]) == {"mm (MatMul 1)"} and 0 < summary["outcomes"]["sdc"]["count"] < len(rows)
    assert set(summary["by_opcode"]) == {"activation"} and set(summary["by_function"]) == {"h (mm)"}
    db.close()


def test_a_tensor_read_by_two_nodes_is_hit_in_every_copy(tmp_path):
    """Each outlined node stores the constants it reads: W read by two MatMuls has two copies in
    weights.S. A weight fault is a fault of the tensor: both copies flip, and the output is exactly
    numpy's h(W') + h(W')."""
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["h1"], name="mm1"),
                        helper.make_node("MatMul", ["x", "W"], ["h2"], name="mm2"),
                        helper.make_node("Add", ["h1", "h2"], ["y"], name="add")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 65])],
                       [numpy_helper.from_array(W, "W")])
    onnx.save(model, tmp_path / "twice.onnx")
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", X)
    campaign = Campaign.from_onnx(tmp_path / "twice.onnx", parse_config(CONFIG), tmp_path / "inputs",
                                  out_dir=tmp_path / "work", jobs=2)
    campaign.run(120, progress=False)
    assert [w["tensor"] for w in campaign.build.manifest["weights"]] == ["W", "W"]
    [target] = campaign.weight_targets
    assert len(target.copies) == 2
    db = sqlite3.connect(campaign.db_path)
    for element, bit, output in db.execute("SELECT dyn_index, bit, output FROM trials WHERE status = 'ok'"):
        h = numpy_model(flipped(W, w_index(campaign.build, element), bit), np.zeros_like(B))
        with np.errstate(all="ignore"):
            expected = (h + h).astype(np.float32)
        got = np.frombuffer(output, "<f4")
        assert np.array_equal(got, expected.reshape(-1), equal_nan=True), (element, bit)
    db.close()


def test_uniform_weight_draws_replay_and_resume(model_dir):
    """Uniform draws over (element, bit) are reproducible from the seed; a trial replays alone to the
    same fault and outcome; a second run resumes without re-running anything."""
    config = parse_config(CONFIG.replace("seed: 3", "seed: 5") + "select: {nodes: [mm]}\n")
    campaign = Campaign.from_onnx(model_dir / "mm.onnx", config, model_dir / "inputs",
                                  out_dir=model_dir / "work", jobs=2)
    summary = campaign.run(300, progress=False)
    assert summary["trials"] == 300
    db = sqlite3.connect(campaign.db_path)
    sites = {s for (s,) in db.execute("SELECT DISTINCT site FROM trials")}
    assert [n for (n,) in db.execute("SELECT function FROM sites")] == ["W"] and len(sites) == 1
    bits = [b for (b,) in db.execute("SELECT bit FROM trials")]
    assert len(set(bits)) > 20 and min(bits) >= 0 and max(bits) <= 31
    sdc = db.execute("SELECT id FROM trials WHERE outcome = 'sdc' LIMIT 1").fetchone()[0]
    db.close()
    replay = replay_trial(campaign.db_path, sdc)
    assert replay.matches and replay.outcome == "sdc"
    again = Campaign.from_onnx(model_dir / "mm.onnx", config, model_dir / "inputs", out_dir=model_dir / "work")
    again.run(300, progress=False)
    assert again.last_trials == 0


def test_weight_fault_config_and_refusals(model_dir):
    assert parse_config("fault: {target: weights, tensors: [W]}").tensors == frozenset({"W"})
    assert parse_config("").target == "instructions"
    with pytest.raises(ConfigError, match="target: 'memory' is not one of"):
        parse_config("fault: {target: memory}")
    with pytest.raises(ConfigError, match="give target: weights too"):
        parse_config("fault: {tensors: [W]}")
    config = parse_config("fault: {target: weights, tensors: [nope]}")
    campaign = Campaign.from_onnx(model_dir / "mm.onnx", config, model_dir / "inputs", out_dir=model_dir / "work")
    with pytest.raises(UsageError, match="nope"):
        campaign.run(1, progress=False)
    with pytest.raises(UsageError, match="--engine simple"):
        Campaign.from_onnx(model_dir / "mm.onnx", parse_config("fault: {target: weights}"), model_dir / "inputs",
                           out_dir=model_dir / "work", engine="walk")


def test_cli_target_weights(model_dir, tmp_path, capsys):
    """`inject --target weights --tensors B` runs a weight campaign and `results` shows it per tensor."""
    db = tmp_path / "w.db"
    assert main(["inject", str(model_dir / "mm.onnx"), "--inputs", str(model_dir / "inputs"), "-o",
                 str(model_dir / "work"), "--target", "weights", "--tensors", "B", "--runs", "40", "--db", str(db),
                 "--quiet", "--jobs", "1"]) == 0
    rows = sqlite3.connect(db).execute("SELECT DISTINCT s.function FROM trials t JOIN sites s ON s.id = t.site")
    assert [r[0] for r in rows] == ["B"]
    capsys.readouterr()
    assert main(["results", str(db)]) == 0
    assert "Per tensor" in capsys.readouterr().out
    assert main(["inject", str(model_dir / "mm.onnx"), "--tensors", "B", "--runs", "1"]) == 2
    capsys.readouterr()
    assert main(["inject", str(model_dir / "mm.onnx"), "--inputs", str(model_dir / "inputs"), "-o",
                 str(model_dir / "work"), "--target", "weights", "--exhaustive", "--dry-run"]) == 0
    assert f"{(W.size + B.size) * 32:,}" in capsys.readouterr().out  # every (element, bit)


def stored_weights(build, directory) -> tuple[dict, np.ndarray]:
    """The build's one weight table entry and its elements as stored in the weights file."""
    (entry,) = build.manifest["weights"]
    asm = (directory / "weights.S").read_text()
    path = re.search(rf"^{entry['symbol']}:\n\t\.incbin \"([^\"]+)\"", asm, re.M).group(1)
    return entry, np.fromfile(directory / path, np.float32)


@pytest.mark.parametrize("trans_b", [0, 1], ids=["matmul_b", "gemm_transposed_b"])
def test_stored_panels_map_back_to_the_initializer(trans_b, tmp_path):
    """Every stored element of a packed B is the initializer element `source_element` names (read
    from the weights file the program is assembled from): 5 rows, so 16-column panels and a tail."""
    w = RNG.standard_normal((37, 11) if trans_b else (11, 37)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "W"], ["y"], transB=trans_b, name="fc")
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 11])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 37])],
                       [numpy_helper.from_array(w, "W")])
    build = compile_onnx(model, tmp_path / "b")
    entry, stored = stored_weights(build, tmp_path / "b")
    assert entry["tensor"] == "W" and entry["panels"] == {"width": 16, "k": 11, "n": 37, "transposed": bool(trans_b)}
    assert stored.size == w.size
    assert [stored[e] for e in range(w.size)] == [w.reshape(-1)[source_element(entry, e)] for e in range(w.size)]
    x = RNG.standard_normal((5, 11)).astype(np.float32)
    np.testing.assert_allclose(build.run([x])[0], x @ (w.T if trans_b else w), rtol=1e-5, atol=1e-5)


def test_stored_conv_weights_map_back_to_the_initializer(tmp_path):
    """A Conv with output channels in the lanes keeps W^T (c, kh, kw by output channel) in 16-channel
    panels, the last of 8: every stored element is the W element `source_element` names."""
    w = RNG.standard_normal((24, 16, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1], name="conv")
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 5, 5])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 5, 5])],
                       [numpy_helper.from_array(w, "W")])
    build = compile_onnx(model, tmp_path / "b")
    entry, stored = stored_weights(build, tmp_path / "b")
    assert entry["tensor"] == "W" and entry["panels"] == {"width": 16, "k": 144, "n": 24, "transposed": True}
    assert stored.size == w.size
    assert [stored[e] for e in range(w.size)] == [w.reshape(-1)[source_element(entry, e)] for e in range(w.size)]
    x = RNG.standard_normal((1, 16, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(build.run([x])[0], ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
