"""`lltfi-mlir report`: one self-contained HTML page, rendered by headless Chromium (not blank), with
no URL, no script and every model-supplied name escaped; databases opened read-only."""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser

import numpy as np
import onnx
import pytest
from conftest import tiny_cnn

from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.campaign.html_report import clean_svg, render_report
from lltfi_mlir.cli import main

HOSTILE_CONV = 'conv<script>alert("x")</script>&$x^2$'  # `$`: no mathtext in chart labels either
HOSTILE_FC = "fc<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """A traced instruction-level campaign and an operator-level one on a CNN whose node names are HTML."""
    root = tmp_path_factory.mktemp("report")
    model = tiny_cnn()
    model.graph.node[0].name = HOSTILE_CONV
    model.graph.node[4].name = HOSTILE_FC
    onnx.save(model, root / "cnn.onnx")
    (root / "inputs").mkdir()
    rng = np.random.default_rng(5)
    for i in range(2):
        np.save(root / "inputs" / f"{i}.npy", rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
    paths = []
    for name, config in (("traced", CampaignConfig(seed=4, trace_layers=True, max_trace=8)),
                         ("operator", CampaignConfig(seed=4, level="operator"))):
        campaign = Campaign.from_onnx(root / "cnn.onnx", config, root / "inputs", out_dir=root / "out",
                                      db=root / f"{name}.db", jobs=2)
        campaign.run(150, progress=False)
        paths.append(root / f"{name}.db")
    return root, paths


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def report(dbs):
    """The report of both databases, written by the CLI; the databases are left as they were."""
    root, paths = dbs
    before = [_digest(p) for p in paths]
    out = root / "report.html"
    assert main(["report", *map(str, paths), "-o", str(out), "--label", "<i>instruction</i> level",
                 "--label", "operator level"]) == 0
    assert [_digest(p) for p in paths] == before
    return out


class _Tags(HTMLParser):
    """Every tag and attribute name of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def test_report_renders_in_headless_chromium(report, tmp_path):
    out = report
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed (Debian: apt-get install chromium; .ci/run installs it)"
    png = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,2400",
                    out.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = len(np.unique((pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8)
                            | pixels[:, 2]))
    inked = np.mean(np.any(pixels < 230, axis=1))
    reddish = np.mean((pixels[:, 0] > 150) & (pixels[:, 1] < 110) & (pixels[:, 2] < 110))  # SDC bars, graphs
    assert colours > 200, colours
    assert inked > 0.05, inked
    assert reddish > 0.001, reddish


def test_report_is_self_contained_and_escapes_every_name(report):
    page = report.read_text()
    assert not re.search(r"https?://", page)
    parsed = _Tags()
    parsed.feed(page)
    assert not parsed.tags & {"script", "iframe", "object", "embed", "img", "i", "link", "foreignobject"}
    assert not [a for a in parsed.attributes if a.startswith("on") or a == "src"]
    assert page.count("<style>") == 1 and "@import" not in page  # the page's own style only
    assert "conv&lt;script&gt;alert(" in page and "fc&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;i&gt;instruction&lt;/i&gt; level" in page
    assert page.count("<svg") >= 10  # outcome, layer, opcode, bit, masking charts; comparison; graphs
    for heading in ("Side by side", "SDC per layer", "SDC per opcode", "SDC per bit position", "Masking",
                    "Fault propagation (Table II)", "Propagation graphs"):
        assert heading in page, heading
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # each image's ids prefixed: no reference crosses images


def test_report_shows_trials_ended_early(dbs, tmp_path):
    """The `masked_at` column (the walk engine's early end) becomes a chart and a table when present."""
    _, paths = dbs
    db = tmp_path / "masked.db"
    shutil.copy(paths[0], db)
    connection = sqlite3.connect(db)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(trials)")}
    if "masked_at" not in columns:
        connection.execute("ALTER TABLE trials ADD COLUMN masked_at TEXT")
    connection.execute("UPDATE trials SET masked_at = ? WHERE outcome = 'benign' AND id % 3 = 0", (HOSTILE_FC,))
    expected = connection.execute("SELECT COUNT(*) FROM trials WHERE masked_at IS NOT NULL").fetchone()[0]
    connection.commit()
    connection.close()
    page = render_report([db])
    assert f"{expected} trials ended early" in page
    assert "fc&lt;img src=x onerror=alert(1)&gt;</td><td>" + str(expected) in page


def test_chosen_trials_get_their_propagation_graphs(dbs):
    _, paths = dbs
    connection = sqlite3.connect(paths[0])
    chosen = [i for (i,) in connection.execute("SELECT DISTINCT trial FROM layer_trace ORDER BY trial DESC LIMIT 2")]
    connection.close()
    page = render_report(paths[:1], trials=chosen)
    for trial in chosen:
        assert f"<h4>Trial {trial} (" in page
    assert page.count("<figcaption>operators</figcaption>") == 2
    assert page.count("<figcaption>instructions</figcaption>") == 2  # maxTrace: the instruction graph too


def test_clean_svg_keeps_the_picture_and_drops_everything_active():
    svg = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x "boom">]>'
           '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" onload="f()">'
           '<metadata><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></metadata>'
           '<style>@import url(http://evil.example/x.css);</style><script>alert(1)</script>'
           '<defs><path id="m1" d="M0 0"/><clipPath id="c1"><rect width="1" height="1"/></clipPath></defs>'
           '<a xlink:href="https://evil.example"><text onclick="g()">label &lt;b&gt;</text></a>'
           '<use xlink:href="#m1" clip-path="url(#c1)"/><foreignObject><div>x</div></foreignObject>'
           '<image href="data:image/png;base64,AAAA"/><rect fill="url(https://evil.example/p)" width="2"/></svg>')
    out = clean_svg(svg, "s7-")
    assert not re.search(r"https?:|data:|script|style|onload|onclick|foreignObject|<image|ENTITY|metadata", out)
    assert 'id="s7-m1"' in out and 'href="#s7-m1"' in out and 'clip-path="url(#s7-c1)"' in out
    assert "label &lt;b&gt;" in out and out.startswith("<svg")


@pytest.mark.parametrize("argv, message", [(["report", "nowhere.db"], "not found"),
                                           (["report", "{bad}"], "not a campaign database")])
def test_report_usage_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "{bad}").write_text("not sqlite")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
