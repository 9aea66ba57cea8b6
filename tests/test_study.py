"""examples/study/study.py end to end: every research question at the tiny scale (default suite) and
at the small scale (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

STUDY = Path(__file__).resolve().parents[1] / "examples" / "study" / "study.py"


def load_study():
    spec = importlib.util.spec_from_file_location("lltfi_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check_report(out: Path, runs: int, models: tuple[str, ...], html: bool) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert set(report["rq0"]["rows"]) >= {"cnn_fmnist", "cnn_fmnist_dynamo", "cnn_fmnist_keras"}
    for row in report["rq0"]["rows"].values():
        assert row["sdc"]["trials"] == runs
    # The TorchScript and dynamo exports hold the same weights: same instructions, same rates.
    assert report["rq0"]["pytorch_exports_agree"] is True
    for name in models:
        rq1 = report["rq1"][name]
        assert rq1["instruction"]["trials"] == rq1["operator"]["trials"] == runs
        table = report["rq2"][name]["table_two"]
        assert table["trials"] > 0 and 0 <= table["injected_layer_changed"]["rate"] <= 1
        for entry in report["sid"][name]:
            assert entry["hardened"]["trials"] == runs and entry["overhead"] > -0.5
        weights = report["weights"][name]
        assert weights["weights"]["trials"] == weights["activations"]["trials"] == runs
        assert all(0 <= int(bit) <= 31 for bit in weights["weight_sdc_bits"])
        assert weights["weights_per_tensor"]  # per tensor
        assert weights["table_two"]["trials"] > 0  # weight faults traced through the layers
    for db in report["databases"].values():
        assert Path(db).exists()
    text = (out / "report.md").read_text()
    for heading in ("RQ0", "RQ1", "RQ2", "SID", "Weight faults"):
        assert heading in text
    if html:
        page = (out / "report.html").read_text()
        assert "<table" in page and all(label in page for label in report["databases"])
    return report


def test_study_tiny(tmp_path):
    study = load_study()
    # The HTML page of these databases costs as much as the campaigns: the slow test checks it.
    assert study.main(["--scale", "tiny", "-o", str(tmp_path), "--jobs", "2", "--no-html"]) == 0
    check_report(tmp_path, study.SCALES["tiny"].runs, study.SCALES["tiny"].models, html=False)


@pytest.mark.slow
def test_study_small(tmp_path):
    study = load_study()
    assert study.main(["--scale", "small", "-o", str(tmp_path)]) == 0
    check_report(tmp_path, study.SCALES["small"].runs, study.SCALES["small"].models, html=True)
