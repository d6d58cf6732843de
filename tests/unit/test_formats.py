"""Other formats than PDF: recognised by their bytes, checked before anything opens them, and converted
in a bounded subprocess into PDF pages whose text holds each sample's phrase (real files, see
tests/data/formats/SOURCE.md). Hostile files are refused in words, or converted harmlessly."""
from __future__ import annotations

import time

import pymupdf
import pytest

from docenrich import formats, uploads
from docenrich.formats import markup
from docenrich.pdf import extract_snippets
from tests.helpers import formats as samples

LIMITS = uploads.Limits(max_mb=100, max_pages=1000, max_queued=10)
needs_office = pytest.mark.skipif(formats.soffice() is None,
                                  reason="LibreOffice is not installed: apt-get install libreoffice-writer-nogui "
                                         "libreoffice-impress-nogui libreoffice-calc-nogui")


def refused(data: bytes, name: str, limits: uploads.Limits = LIMITS) -> uploads.Refused:
    with pytest.raises(uploads.Refused) as caught:
        uploads.check(data, name, limits)
    assert name in caught.value.message and "Traceback" not in caught.value.message
    return caught.value


@pytest.mark.parametrize("sample", samples.SAMPLES, ids=lambda s: s.kind)
def test_every_sample_is_recognised_by_its_bytes(sample):
    # The name says nothing: the bytes decide (text formats excepted, which only their name tells apart).
    name = sample.name if sample.kind in ("markdown", "text") else "upload.bin"
    assert formats.detect(sample.read(), name).kind == sample.kind


@pytest.mark.parametrize("sample", [s for s in samples.SAMPLES if s.kind not in samples.OFFICE_KINDS],
                         ids=lambda s: s.kind)
def test_upload_check_describes_the_file_for_the_worker(sample):
    info = uploads.check(sample.read(), sample.name, LIMITS)
    assert info.page_count == 0  # counted once the worker has converted it
    assert formats.source_format(info.metadata).kind == sample.kind
    assert formats.media_type(info.metadata) == formats.FORMATS[sample.kind].media_type


@pytest.mark.slow
@pytest.mark.parametrize("sample", [s for s in samples.SAMPLES if s.kind not in samples.OFFICE_KINDS],
                         ids=lambda s: s.kind)
def test_mupdf_and_story_formats_convert_to_pages_holding_their_text(sample):
    paged = formats.to_pdf(sample.read(), formats.FORMATS[sample.kind])
    assert paged.pages >= 1
    with pymupdf.open("pdf", paged.pdf) as doc:
        assert doc.page_count == paged.pages
        text = " ".join(page.get_text() for page in doc)
    if sample.kind in ("png", "jpeg", "tiff", "cbz", "xps"):
        return  # pictures: their text comes from OCR during extraction (the integration tests search it)
    assert sample.phrase.lower() in " ".join(text.split()).lower()


@pytest.mark.slow
@needs_office
@pytest.mark.parametrize("kind", sorted(samples.OFFICE_KINDS))
def test_office_formats_convert_with_libreoffice(kind):
    sample = samples.BY_KIND[kind]
    paged = formats.to_pdf(sample.read(), formats.FORMATS[kind])
    with pymupdf.open("pdf", paged.pdf) as doc:
        text = " ".join(" ".join(page.get_text() for page in doc).split())
    assert paged.pages >= 1 and sample.phrase.lower() in text.lower()


def test_headings_of_markdown_become_heading_paths():
    paged = formats.to_pdf(samples.BY_KIND["markdown"].read(), formats.FORMATS["markdown"])
    assert paged.title == "Porting systemd To New Distributions"
    paths = {s.meta.get("heading") for s in extract_snippets(paged.pdf, images=False)}
    assert "Porting systemd To New Distributions › NTP Pool" in paths


def test_html_is_cleaned_of_scripts_styles_and_outside_resources():
    body, title = markup.clean_html(
        '<html><head><title>T</title><style>h1{color:red}</style><link rel=stylesheet href="http://x/y.css">'
        '<script>alert(1)</script></head><body><h2 onclick="evil()" style="background:url(http://x)">Head</h2>'
        '<img src="http://example.invalid/a.png"><img src="file:///etc/passwd"><iframe src="http://x"></iframe>'
        '<p>Kept <b>bold</b> &amp; <a href="javascript:alert(1)">linked</a></p></body></html>')
    assert title == "T"
    assert body == "<h2>Head</h2><p>Kept <b>bold</b> &amp; linked</p>"


def test_a_zip_bomb_docx_is_refused_before_anything_opens_it():
    found = refused(samples.zip_bomb_docx(), "report.docx")
    assert found.status == 413 and found.code == "bomb" and "decompression bomb" in found.message


def test_an_epub_declaring_a_gigabyte_entry_is_refused():
    found = refused(samples.epub_declaring_a_gigabyte(), "book.epub")
    assert found.status == 413 and found.code == "bomb" and "1,024 MB" in found.message


def test_an_archive_lying_about_its_sizes_is_caught_when_inflated():
    bomb = samples.zip_bomb_docx(8)  # declared honestly and small enough: only inflation tells
    small = formats.ZipLimits(max_unzipped=4 * samples.MB)
    with pytest.raises(formats.FormatError) as caught:
        formats.safety.verify_zip(bomb, small)
    assert caught.value.code == "bomb"


def test_encrypted_office_files_are_refused_in_words():
    ooxml = refused(samples.encrypted_ooxml(), "secret.docx")
    odt = refused(samples.encrypted_odt(), "secret.odt")
    assert ooxml.code == odt.code == "encrypted" and ooxml.status == odt.status == 422
    assert "password" in ooxml.message and "password" in odt.message


def test_huge_markdown_is_refused_by_the_text_limit():
    found = refused(samples.huge_markdown(50), "notes.md")
    assert found.status == 413 and found.code == "too_large" and "MAX_TEXT_MB" in found.message


def test_deeply_nested_html_converts_quickly_with_its_text():
    started = time.monotonic()
    paged = formats.to_pdf(samples.nested_html(100_000), formats.FORMATS["html"])
    assert time.monotonic() - started < 60
    with pymupdf.open("pdf", paged.pdf) as doc:
        assert "innermost sentence" in " ".join(page.get_text() for page in doc)


def test_a_conversion_over_its_time_limit_is_stopped_in_words():
    budget = formats.Budget(timeout=0.01)
    with pytest.raises(formats.FormatError) as caught:
        formats.to_pdf(samples.nested_html(100_000), formats.FORMATS["html"], budget)
    assert caught.value.code == "timeout" and "CONVERT_TIMEOUT" in caught.value.message


def test_page_limit_counts_the_converted_pages():
    with pytest.raises(formats.FormatError) as caught:
        formats.to_pdf(samples.BY_KIND["epub"].read(), formats.FORMATS["epub"], formats.Budget(max_pages=5))
    assert caught.value.code == "too_many_pages" and "limit is 5" in caught.value.message


def test_a_file_named_pdf_must_be_a_pdf_and_unknown_types_are_named():
    assert refused(samples.BY_KIND["png"].read(), "scan.pdf").code == "not_pdf"
    unknown = refused(b"\x00\x01binary stuff", "data.bin")
    assert unknown.status == 415 and "DOCX" in unknown.message and "EPUB" in unknown.message


def test_office_files_without_libreoffice_name_what_to_install(monkeypatch):
    monkeypatch.setenv("SOFFICE", "/nonexistent/soffice")
    found = refused(samples.BY_KIND["docx"].read(), "letter.docx")
    assert found.status == 415 and found.code == "no_converter" and "apt-get install libreoffice" in found.message
