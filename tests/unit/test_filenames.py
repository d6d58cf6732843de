"""Upload file names made safe to store and show: no directories, control characters or bidi
overrides, and a name for an empty one."""
from __future__ import annotations

import pytest

from docenrich.storage import sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\bob\\Q3 report.pdf", "Q3 report.pdf"),
        ("evil\x00name\x1b[31m.pdf", "evilname[31m.pdf"),
        ("line\nbreak\t.pdf", "line break .pdf"),
        ("spoof\u202egpj.pdf", "spoofgpj.pdf"),
        ("..", "document.pdf"),
        ("", "document.pdf"),
        (None, "document.pdf"),
        ("dir/", "document.pdf"),
    ],
)
def test_filename_sanitising(raw, expected):
    assert sanitize_filename(raw) == expected
