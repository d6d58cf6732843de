"""Region images drawn after extraction are the same pictures as the eager path draws."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from docenrich.pdf import extract_snippets, render_regions
from tests.helpers.env import corpus_file

FILES = (
    "026-latex-multicolumn/multicolumn.pdf",
    "015-arabic/habibi-rotated.pdf",
    "003-pdflatex-image/pdflatex-image.pdf",
    "007-imagemagick-images/imagemagick-images.pdf",
)


def _difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two images in gray, the second resized to the first."""
    a, b = a.convert("L"), b.convert("L").resize(a.size)
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize("relative", FILES)
def test_lazily_drawn_regions_match_the_eager_ones(relative):
    path = corpus_file(relative)
    eager = extract_snippets(path, end_page=3)
    lazy = extract_snippets(path, end_page=3, images=False)
    assert [s.bbox for s in lazy] == [s.bbox for s in eager] and all(s.image is None for s in lazy)
    drawn = render_regions(path, [(s.page, s.bbox, s.kind) for s in lazy])
    compared = 0
    for before, after in zip(eager, drawn):
        if before.image is None:
            continue
        assert after is not None, f"page {before.page} {before.kind}: no lazy image"
        (w0, h0), (w1, h1) = before.image.size, after.size
        assert abs(w0 - w1) <= 3 and abs(h0 - h1) <= 3, (before.page, before.kind, before.image.size, after.size)
        assert after.mode == before.image.mode or before.kind not in ("figure", "page")
        assert _difference(before.image, after) < 25, (before.page, before.kind)
        compared += 1
    assert compared >= 1


def test_regions_outside_the_document_draw_nothing():
    path = corpus_file(FILES[0])
    out = render_regions(path, [(99, (0, 0, 10, 10), "text"), (1, (5000, 5000, 5100, 5100), "text")])
    assert out == [None, None]
