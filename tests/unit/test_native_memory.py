"""A docs child hands MuPDF's cache back after each task."""
from __future__ import annotations

import re

import pymupdf

from docenrich.pdf import extract_snippets
from docenrich.pdf.memory import release_native_memory
from tests.helpers.env import corpus_file


def _store_bytes(capfd) -> int:
    """What MuPDF's resource store holds now, from its own report (it writes to file descriptor 1)."""
    capfd.readouterr()
    pymupdf.mupdf.fz_debug_store(pymupdf.mupdf.FzOutput(pymupdf.mupdf.FzOutput.Fixed_STDOUT))
    sizes = re.findall(r"max=\d+, size=(\d+)", capfd.readouterr().out)
    assert sizes, "MuPDF's store report has no size line"
    return int(sizes[-1])


def test_releasing_native_memory_empties_mupdfs_store(capfd):
    extract_snippets(corpus_file("007-imagemagick-images/imagemagick-images.pdf"), end_page=2)
    assert _store_bytes(capfd) > 0
    release_native_memory()
    assert _store_bytes(capfd) == 0
    # Housekeeping leaves MuPDF usable for the next document.
    assert extract_snippets(corpus_file("003-pdflatex-image/pdflatex-image.pdf"), end_page=1)
