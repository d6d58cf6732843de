"""Opening and validating PDFs, and describing them without extracting them."""
from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import pymupdf

from .errors import PDFError
from .text import _clean_text, _meaningful

log = logging.getLogger(__name__)

INSPECT_MAX_CONTENT = 4 * 1024 * 1024

# Signatures of formats people upload by mistake; such a file is not a PDF even when
# "%PDF-" occurs in its first KB (a zip holding a PDF, an HTML error page quoting one).
_OTHER_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*",
                b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf", b"\xd0\xcf\x11\xe0", b"BM", b"RIFF", b"<!DOCTYPE", b"<html",
                b"{\\rtf")


@dataclass
class DocumentInfo:
    """What the upload path needs to know about a PDF, found without extracting it."""

    page_count: int
    title: str
    producer: str
    has_text_layer: bool
    metadata: dict


def _clean_meta(value: object) -> str:
    return str(value or "").replace("\x00", "").strip()


def _read_ends(source: bytes | bytearray | memoryview | str | Path
               ) -> tuple[bytes | None, str | None, int, bytes, bytes]:
    """(data or None, path or None, size, first KB, last 4 KB) of a PDF given as bytes or a path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data, None, len(data), data[:1024], data[-4096:]
    path = os.fspath(source)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(1024)
        fh.seek(max(0, size - 4096))
        tail = fh.read()
    return None, path, size, head, tail


def _check_opened(doc: pymupdf.Document, tail: bytes, max_pages: int | None) -> None:
    """Raise PDFError for an opened document that is locked, cut off, empty or too long."""
    if doc.needs_pass:
        raise PDFError("encrypted")
    truncated = doc.is_repaired and b"%%EOF" not in tail
    if truncated:
        # An interrupted upload: MuPDF would silently "repair" it into a partial document.
        raise PDFError("corrupt", "This PDF is incomplete (the file seems cut off); upload it again.")
    n = doc.page_count
    if n == 0:
        raise PDFError("empty")
    if max_pages is not None and n > max_pages:
        raise PDFError("too_many_pages", f"This PDF has {n} pages; the limit is {max_pages}.")


def _open(source: bytes | bytearray | memoryview | str | Path, *, max_bytes: int | None = None,
          max_pages: int | None = None) -> pymupdf.Document:
    """Open and validate a PDF, raising PDFError with the right code."""
    data, path, size, head, tail = _read_ends(source)
    if size == 0:
        raise PDFError("empty", "This file is empty (0 bytes); upload the PDF again.")
    if max_bytes is not None and size > max_bytes:
        raise PDFError("too_large", f"This PDF is {size / 1048576:.1f} MB; the limit is "
                                    f"{max_bytes / 1048576:.1f} MB.")
    if head.startswith(_OTHER_MAGIC) or b"%PDF-" not in head:
        raise PDFError("not_pdf")
    try:
        doc = pymupdf.open(stream=data, filetype="pdf") if data is not None else pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # MuPDF raises several types for unreadable files
        log.info("PDF failed to open: %s", exc)
        raise PDFError("corrupt") from exc
    try:
        _check_opened(doc, tail, max_pages)
    except PDFError:
        doc.close()
        raise
    except Exception as exc:
        doc.close()
        raise PDFError("corrupt") from exc
    return doc


def _page(doc: pymupdf.Document, number: int) -> pymupdf.Page:
    """Page `number` (1-based); a page the page tree counts but cannot deliver means a damaged file."""
    try:
        return doc[number - 1]
    except (IndexError, ValueError, RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
        raise PDFError("corrupt", f"This PDF is damaged: its page {number} cannot be found ({exc}).") from exc


def _inflates_small(doc: pymupdf.Document, xref: int, limit: int) -> bool:
    """True when a content stream inflates to at most `limit` bytes (never inflating more)."""
    raw = doc.xref_stream_raw(xref) or b""
    if "FlateDecode" not in (doc.xref_get_key(xref, "Filter")[1] or ""):
        return len(raw) <= limit
    try:
        out = zlib.decompressobj().decompress(raw, limit + 1)
    except zlib.error:
        return True  # MuPDF will refuse it quickly too
    return len(out) <= limit


def _page_has_text(doc: pymupdf.Document, index: int) -> bool:
    """Whether a page carries a text layer, without inflating a decompression bomb."""
    if not doc.get_page_fonts(index):
        return False
    page = doc[index]
    if not all(_inflates_small(doc, x, INSPECT_MAX_CONTENT) for x in page.get_contents()):
        # Too big to read during an upload: fonts are named, the worker will see the rest.
        return True
    return _meaningful(_clean_text(page.get_text("text", flags=pymupdf.TEXT_MEDIABOX_CLIP)))


def _sample_has_text(doc: pymupdf.Document) -> bool:
    """Whether any of a few pages spread through the document has a text layer."""
    n = doc.page_count
    # A few pages spread through the document decide has_text_layer; reading every
    # page of a 5,000-page upload would block the web process.
    sample = sorted({0, 1, 2, n // 2, n - 2, n - 1} & set(range(n)))
    for i in sample:
        try:
            if _page_has_text(doc, i):
                return True
        except Exception as exc:
            log.warning("inspect_pdf: page %d unreadable: %s", i + 1, exc)
    return False


def inspect_pdf(source: bytes | str | Path, *, max_bytes: int | None = None,
                max_pages: int | None = None) -> DocumentInfo:
    """Validate a PDF quickly and describe it; raises PDFError for unusable input."""
    doc = _open(source, max_bytes=max_bytes, max_pages=max_pages)
    try:
        has_text = _sample_has_text(doc)
        meta = {k: _clean_meta(v) for k, v in (doc.metadata or {}).items() if v}
        return DocumentInfo(page_count=doc.page_count, title=_clean_meta(meta.get("title")),
                            producer=_clean_meta(meta.get("producer")),
                            has_text_layer=has_text, metadata=meta)
    finally:
        doc.close()


def page_count(source: bytes | str | Path) -> int:
    """Number of pages of a valid PDF; raises PDFError otherwise."""
    doc = _open(source)
    try:
        return doc.page_count
    finally:
        doc.close()
