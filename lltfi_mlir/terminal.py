"""Untrusted text (model, node, tensor and file names, program output) made safe for the terminal.

Names come from ONNX files, databases and the command line. Printed raw, an ANSI escape can
recolour, hide or rewrite what the terminal shows, and Rich markup such as `[/x]` makes Rich
raise after the work is done. `plain` removes control sequences; `safe` also escapes markup, for
strings that Rich parses (console.print with markup, Table cells, titles, status lines).
"""

from __future__ import annotations

import re

from rich.markup import escape

# ESC-introduced sequences (CSI, OSC, two-character escapes), then any other C0/C1 control
# character, DEL, and the Unicode bidirectional overrides that reorder what is displayed.
_ESCAPE_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_]?)"
                              r"|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(text: object) -> str:
    """`text` without escape sequences; other control characters become `?` (one line, no tricks)."""
    return _CONTROL.sub("?", _ESCAPE_SEQUENCE.sub("", str(text)))


def safe(text: object) -> str:
    """`plain(text)` with Rich markup escaped: prints literally wherever Rich parses markup. (Rich's
    `escape` doubles a trailing backslash, which then prints twice unless a tag follows; templates
    here never put a tag right after a name, so the name keeps its single backslash.)"""
    return escape(plain(text) + ".")[:-1]
