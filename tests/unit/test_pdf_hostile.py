"""Hostile input at the PDF entry points, without servers: junk bytes and damaged files are a
PDFError with a code, limits on size and pages hold, inspection stays fast on huge documents, a
broken page tree is a PDFError, and a bounded fuzz of corpus files mutated byte by byte raises
only PDFError and never hangs."""
from __future__ import annotations

import io
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docenrich.pdf import PDFError, extract_snippets, inspect_pdf, page_count
from tests.helpers.env import CORPUS, corpus_file
from tests.helpers.pdfs import broken_page_tree_pdf, build_pdf

# Fuzzing takes FUZZ_SECONDS whatever the machine: `make test` runs it, `make test-fast` leaves it out.
FUZZ_SECONDS = 45


def test_broken_page_tree_is_a_pdf_error_not_an_index_error():
    with pytest.raises(PDFError) as err:
        extract_snippets(broken_page_tree_pdf(), "0" * 16)
    assert err.value.code == "corrupt"


@pytest.mark.slow
def test_fuzzed_corpus_pdfs_raise_only_pdferror_and_never_hang():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    seeds = sorted(p for p in CORPUS.rglob("*.pdf") if p.stat().st_size < 100_000) if CORPUS.exists() else []
    if not seeds:
        pytest.skip(f"the shared PDF corpus is absent ({CORPUS})")
    datas = [p.read_bytes() for p in seeds]
    deadline = time.monotonic() + FUZZ_SECONDS
    stats = {"examples": 0, "pdf_errors": 0, "slowest": 0.0}

    edit = st.tuples(st.sampled_from(["set", "delete", "insert"]), st.floats(0, 1), st.binary(min_size=1, max_size=64))

    @settings(max_examples=3000, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(which=st.integers(0, len(datas) - 1), edits=st.lists(edit, min_size=1, max_size=12),
           cut=st.one_of(st.none(), st.floats(0, 1)))
    def fuzz(which, edits, cut):
        if time.monotonic() > deadline:
            return
        data = bytearray(datas[which])
        for op, where, blob in edits:
            pos = int(where * (len(data) - 1))
            if op == "set":
                data[pos:pos + len(blob)] = blob
            elif op == "delete":
                del data[pos:pos + len(blob) * 8]
            else:
                data[pos:pos] = blob
        if cut is not None:
            data = data[: max(1, int(cut * len(data)))]
        started = time.monotonic()
        for step in (inspect_pdf, lambda d: extract_snippets(d, "0" * 16, ocr=False)):
            try:
                step(bytes(data))
            except PDFError as exc:
                assert exc.code in PDFError.MESSAGES and str(exc), exc
                stats["pdf_errors"] += 1
        took = time.monotonic() - started
        stats["examples"] += 1
        stats["slowest"] = max(stats["slowest"], took)
        assert took < 20, f"one input took {took:.1f}s"

    fuzz()
    print(f"fuzz: {stats['examples']} mutated PDFs from {len(seeds)} corpus files, {stats['pdf_errors']} PDFError, "
          f"slowest {stats['slowest']:.2f}s")


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(buf, "PNG")
    return buf.getvalue()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.pdf", "%PDF-1.4 not really")
    return buf.getvalue()


def _text_pdf(pages: int = 2) -> bytes:
    return build_pdf(*(lambda page, i=i: page.insert_text((72, 100), f"Page body {i + 1} with some words.",
                                                          fontsize=11) for i in range(pages)))


@pytest.mark.parametrize("name,data,code", [
    ("random", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not_pdf"),
    ("png", _png_bytes(), "not_pdf"),
    ("zip", _zip_bytes(), "not_pdf"),
    ("zero", b"", "empty"),
    ("header-garbage", b"%PDF-1.7\n" + bytes(range(256)) * 8, "corrupt"),
    ("truncated", _text_pdf(3)[: len(_text_pdf(3)) // 2], "corrupt"),
])
def test_hostile_bytes(name: str, data: bytes, code: str, tmp_path: Path):
    for source in (data, tmp_path / "upload.pdf"):
        if isinstance(source, Path):
            source.write_bytes(data)
        with pytest.raises(PDFError) as err:
            inspect_pdf(source)
        assert err.value.code == code, (name, err.value.code)
        with pytest.raises(PDFError) as err:
            extract_snippets(source)
        assert err.value.code == code
        assert isinstance(err.value, ValueError) and str(err.value) == err.value.message
    # Errors cross process boundaries (Celery pickles them) with their code.
    back = pickle.loads(pickle.dumps(err.value))
    assert back.code == code and str(back) == str(err.value)


def test_truncated_corpus_file_is_corrupt():
    data = corpus_file("004-pdflatex-4-pages/pdflatex-4-pages.pdf").read_bytes()
    with pytest.raises(PDFError) as err:
        inspect_pdf(data[: len(data) // 2])
    assert err.value.code == "corrupt"


def test_limits():
    data = _text_pdf(3)
    with pytest.raises(PDFError) as err:
        inspect_pdf(data, max_bytes=100)
    assert err.value.code == "too_large"
    with pytest.raises(PDFError) as err:
        inspect_pdf(data, max_pages=2)
    assert err.value.code == "too_many_pages"
    info = inspect_pdf(data, max_pages=3, max_bytes=len(data))
    assert info.page_count == 3 and info.has_text_layer


def test_inspect_is_fast_and_right():
    path = corpus_file("009-pdflatex-geotopo/GeoTopo-komprimiert.pdf")
    data = path.read_bytes()
    t0 = time.perf_counter()
    info = inspect_pdf(data)
    elapsed = time.perf_counter() - t0
    assert info.page_count == 117 and info.title == "Geometrie und Topologie" and info.has_text_layer
    assert "3-Heights" in info.producer and info.metadata["author"] == "Martin Thoma"
    assert elapsed < 0.5
    scan = inspect_pdf(corpus_file("019-grayscale-image/grayscale-image.pdf"))
    assert scan.page_count == 1 and not scan.has_text_layer
    assert page_count(path) == 117


def _many_pages_pdf(n: int) -> bytes:
    """A valid n-page PDF written by hand (pages share one content stream): fast to build."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Count %d /Kids [%s] >>" % (n, b" ".join(b"%d 0 R" % (5 + i) for i in range(n))),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    content = b"BT /F1 12 Tf 20 150 Td (Hello page) Tj ET"
    objs.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R "
             b"/Resources << /Font << /F1 3 0 R >> >> >>"] * n
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_five_thousand_page_document_inspects_quickly():
    data = _many_pages_pdf(5000)
    t0 = time.perf_counter()
    info = inspect_pdf(data)
    assert info.page_count == 5000 and info.has_text_layer and time.perf_counter() - t0 < 0.5
