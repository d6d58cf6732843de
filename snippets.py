"""PDF → searchable snippets: validation, layout-aware chunking, region images, OCR fallback.

This is the only module of docenrich that opens PDFs. Everything is single-threaded and
streams page by page, so a worker's memory is bounded by one batch of pages.
"""
from __future__ import annotations

import glob
import io
import logging
import math
import os
import re
import shutil
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pymupdf
from PIL import Image

log = logging.getLogger(__name__)

# What a damaged page, its fonts or its images can raise. Anything else (a task's soft time
# limit, an interrupt) must reach the caller instead of turning the page into an image.
PAGE_ERRORS: tuple[type[BaseException], ...] = (
    pymupdf.mupdf.FzErrorBase, RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError,
    OSError, ArithmeticError, Image.DecompressionBombError,
)

# MuPDF prints repair warnings to stderr; failures still surface as exceptions and we
# report them as PDFError, so the console noise only hides real log lines.
pymupdf.TOOLS.mupdf_display_warnings(False)

# 100 dpi: 10-pt body text becomes ~14 px tall (comfortably legible), a 450-pt text
# column ~625 px wide, so typical snippets stay under the 1024-px cap without
# resampling; 150 dpi costs ~20-30% more render time and 2.2x the pixels (and bytes)
# for no gain on screen.
DEFAULT_DPI = 100
OCR_DPI_MIN, OCR_DPI_MAX = 150, 300

# Text flags: no TEXT_PRESERVE_LIGATURES (MuPDF expands "ﬁ"), no PRESERVE_WHITESPACE
# (we normalise), no CID_FOR_UNKNOWN_UNICODE (glyph ids would masquerade as Greek or
# CJK letters; U+FFFD is honest and we drop it).
TEXT_FLAGS = pymupdf.TEXT_MEDIABOX_CLIP

# Guards against hostile pages made of thousands of tiny objects.
MAX_BLOCKS_PER_PAGE = 3000
MAX_SPANS_PER_PAGE = 40000
MAX_SNIPPETS_PER_PAGE = 999  # ordinals are page * 1000 + index

# Figures smaller than this (in points, on the page) are icons, bullets or rules.
MIN_FIGURE_PT = 40.0
MIN_FIGURE_AREA_FRACTION = 0.01

# Fractions of page height searched for running headers/footers and for page numbers
# (LaTeX puts folios ~17% above the bottom edge). Only rows between the edge and the
# first row that is neither are ever dropped, so body text below them is safe.
HEADER_BAND = 0.12
PAGE_NUMBER_BAND = 0.2
HEADER_WINDOW = 4       # pages either side compared when looking for repeats
HEADER_Y_TOLERANCE = 6.0

# Image encoding: text regions are grayscale PNG posterised to 8 levels (rounded, so
# thin light strokes such as dashes survive), which keeps anti-aliased glyph edges
# legible at 100 dpi; measured on dense text it is ~2x smaller than lossy WebP (q40-75)
# or JPEG (q50-70), which also smear glyph edges. Photos are JPEG, few-colour diagrams
# PNG.
TEXT_GRAY_LEVELS = 8
RENDER_AA_BITS = 4
PHOTO_JPEG_QUALITY = 80


# --------------------------------------------------------------------------- errors

class PDFError(ValueError):
    """A PDF that cannot be processed; `code` is machine-readable, `message` is for people."""

    MESSAGES = {
        "not_pdf": "This file is not a PDF; upload a PDF document.",
        "corrupt": "This PDF is damaged or incomplete and cannot be read; export or download it again.",
        "encrypted": "This PDF is password-protected; remove the password and upload it again.",
        "empty": "This PDF has no pages.",
        "too_large": "This PDF is too large.",
        "too_many_pages": "This PDF has too many pages.",
    }

    def __init__(self, code: str, message: str | None = None):
        self.code = code
        self.message = message or self.MESSAGES.get(code, "This PDF cannot be processed.")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        # Keeps the code when the error crosses a Celery (pickle) boundary.
        return (PDFError, (self.code, self.message))


# -------------------------------------------------------------------------- snippet

@dataclass(eq=False)
class Snippet:
    """One searchable piece of a document: text, its page region image, and where it came from."""

    text: str = ""
    image: Image.Image | None = None
    page: int = 1
    bbox: tuple[float, float, float, float] | None = None
    document_id: str | None = None
    ordinal: int = 0
    kind: str = "text"
    embedding: "np.ndarray | None" = None
    embedding_model: str | None = None
    meta: dict = field(default_factory=dict)

    def image_bytes(self) -> tuple[bytes, str] | None:
        """The image encoded for transport as (bytes, format), encoded at most once."""
        encoded = self.__dict__.get("_encoded")
        if encoded is None:
            img = self.__dict__.get("_image")
            if img is None:
                return None
            encoded = _encode_image(img, self.kind)
            self.__dict__["_encoded"] = encoded
        return encoded

    @property
    def has_image(self) -> bool:
        """Whether the snippet has an image, without decoding one that arrived encoded."""
        return self.__dict__.get("_image") is not None or self.__dict__.get("_encoded") is not None

    def __getstate__(self) -> dict:
        # Pixels never travel: the image goes as its encoded bytes, decoded lazily.
        state = {k: v for k, v in self.__dict__.items() if k not in ("_image", "_encoded")}
        state["_encoded"] = self.image_bytes()
        if not state["meta"]:
            del state["meta"]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state.setdefault("meta", {})
        self.__dict__.update(state)
        self.__dict__["_image"] = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snippet):
            return NotImplemented
        simple = ("text", "page", "bbox", "document_id", "ordinal", "kind", "embedding_model", "meta")
        if any(getattr(self, k) != getattr(other, k) for k in simple):
            return False
        if (self.embedding is None) != (other.embedding is None):
            return False
        if self.embedding is not None and not np.array_equal(self.embedding, other.embedding):
            return False
        return self.image_bytes() == other.image_bytes()

    __hash__ = None  # mutable


def _get_image(self: Snippet) -> Image.Image | None:
    img = self.__dict__.get("_image")
    if img is None:
        encoded = self.__dict__.get("_encoded")
        if encoded is not None:
            img = Image.open(io.BytesIO(encoded[0]))
            img.load()
            if img.mode == "P" and encoded[1] == "png" and _is_gray_palette(img):
                img = img.convert("L")  # our text PNGs: hand callers a plain grayscale image
            self.__dict__["_image"] = img
    return img


def _is_gray_palette(img: Image.Image) -> bool:
    pal = img.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _set_image(self: Snippet, value: Image.Image | None) -> None:
    if value is not None and not isinstance(value, Image.Image):
        raise TypeError(f"Snippet.image must be a PIL image or None, not {type(value).__name__}")
    self.__dict__["_image"] = value
    self.__dict__["_encoded"] = None


# Installed after @dataclass so the generated __init__ still accepts `image=`.
Snippet.image = property(_get_image, _set_image, doc="The snippet's region image (PIL), decoded lazily.")


def _encode_image(img: Image.Image, kind: str) -> tuple[bytes, str]:
    """Pick the smallest legible encoding: gray PNG for text, PNG for line art, JPEG for photos."""
    buf = io.BytesIO()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels would turn black when the alpha channel is dropped.
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, "white")
        img.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    # Our text crops are grayscale already; anything else is posterised only when it is
    # plainly ink on paper, so photos keep their tones and colours.
    if (kind in ("text", "ocr") and img.mode == "L") or _looks_like_text(img):
        gray = img if img.mode == "L" else img.convert("L")
        # 8 gray levels as a 4-bit palette PNG with zlib's RLE strategy: measured on text
        # crops it is as small as 8-bit gray PNG at the default level (~8.7 vs 8.5 KB)
        # and 3x faster to encode (0.6 vs 2 ms), which matters as every snippet is encoded.
        idx = gray.point(_GRAY_INDEX)
        pal = Image.frombytes("P", idx.size, idx.tobytes())
        pal.putpalette(_GRAY_PALETTE)
        pal.save(buf, "PNG", bits=4, compress_type=zlib.Z_RLE)
        return buf.getvalue(), "png"
    if img.getcolors(64) is not None:
        # Few colours: diagrams and charts stay crisp and small as PNG.
        img.save(buf, "PNG")
        return buf.getvalue(), "png"
    img.save(buf, "JPEG", quality=PHOTO_JPEG_QUALITY, optimize=True)
    return buf.getvalue(), "jpeg"


_L = TEXT_GRAY_LEVELS - 1
_GRAY_INDEX = [round(v * _L / 255) for v in range(256)]   # rounded, so faint strokes survive
_GRAY_PALETTE = [round(i * 255 / _L) for i in range(TEXT_GRAY_LEVELS) for _ in range(3)]


def _looks_like_text(img: Image.Image) -> bool:
    """True when the image is mostly paper and ink (bimodal), as scanned text is."""
    gray = img if img.mode == "L" else img.convert("L")
    if img.mode == "RGB":
        # Coloured pixels mean a photo or chart, not a text scan.
        small = img.convert("RGB").resize((64, 64))
        arr = np.asarray(small, dtype=np.int16)
        if (arr.max(axis=2) - arr.min(axis=2)).mean() > 12:
            return False
    hist = gray.histogram()
    total = sum(hist) or 1
    extremes = sum(hist[:48]) + sum(hist[208:])
    return extremes / total >= 0.9


# ------------------------------------------------------------------- document info

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


# Signatures of formats people upload by mistake; such a file is not a PDF even when
# "%PDF-" occurs in its first KB (a zip holding a PDF, an HTML error page quoting one).
_OTHER_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*",
                b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf", b"\xd0\xcf\x11\xe0", b"BM", b"RIFF", b"<!DOCTYPE", b"<html",
                b"{\\rtf")


def _open(source: bytes | bytearray | memoryview | str | Path, *, max_bytes: int | None = None,
          max_pages: int | None = None) -> pymupdf.Document:
    """Open and validate a PDF, raising PDFError with the right code."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        size = len(data)
        head, tail = data[:1024], data[-4096:]
        path = None
    else:
        path = os.fspath(source)
        size = os.path.getsize(path)
        data = None
        with open(path, "rb") as fh:
            head = fh.read(1024)
            fh.seek(max(0, size - 4096))
            tail = fh.read()
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
    except PDFError:
        doc.close()
        raise
    except Exception as exc:
        doc.close()
        raise PDFError("corrupt") from exc
    return doc


INSPECT_MAX_CONTENT = 4 * 1024 * 1024


def _inflates_small(doc: pymupdf.Document, xref: int, limit: int) -> bool:
    """True when a content stream inflates to at most `limit` bytes (never inflating more)."""
    import zlib

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


def inspect_pdf(source: bytes | str | Path, *, max_bytes: int | None = None,
                max_pages: int | None = None) -> DocumentInfo:
    """Validate a PDF quickly and describe it; raises PDFError for unusable input."""
    doc = _open(source, max_bytes=max_bytes, max_pages=max_pages)
    try:
        n = doc.page_count
        # A few pages spread through the document decide has_text_layer; reading every
        # page of a 5,000-page upload would block the web process.
        sample = sorted({0, 1, 2, n // 2, n - 2, n - 1} & set(range(n)))
        has_text = False
        for i in sample:
            try:
                has_text = _page_has_text(doc, i)
            except Exception as exc:
                log.warning("inspect_pdf: page %d unreadable: %s", i + 1, exc)
                continue
            if has_text:
                break
        meta = {k: _clean_meta(v) for k, v in (doc.metadata or {}).items() if v}
        return DocumentInfo(page_count=n, title=_clean_meta(meta.get("title")),
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


def render_page_thumbnail(source: bytes | str | Path, page: int, width: int = 240) -> bytes:
    """PNG bytes of one page (1-based) scaled to `width` pixels, for the web UI."""
    doc = _open(source)
    try:
        if not 1 <= page <= doc.page_count:
            raise ValueError(f"page {page} out of range 1..{doc.page_count}")
        pg = doc[page - 1]
        zoom = max(width, 1) / max(pg.rect.width, 1.0)
        pix = pg.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
        img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()
    finally:
        doc.close()


# -------------------------------------------------------------------- text cleanup

_SPACE_RE = re.compile(r"[\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
# Control chars, U+FFFD (unknown glyph), zero-width space, BOM and private-use glyphs
# carry nothing searchable. ZWJ/ZWNJ stay: Persian and Indic spelling needs them.
_JUNK_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\u200b\u2060\ufeff\ue000-\uf8ff]")
# Only compatibility blocks go through NFKC: Latin ligatures, Arabic/Hebrew presentation
# forms and full-width forms. NFKC on everything would also rewrite ², ½, ™, µ, etc.
_COMPAT_RE = re.compile(r"[\ufb00-\ufdff\ufe70-\ufeff\uff00-\uffef]+")
_ARABIC_FORMS_RE = re.compile(r"[\ufb50-\ufdff\ufe70-\ufefc]")
_RTL_RE = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
_WORD_CHAR_RE = re.compile(r"\w", re.UNICODE)


def _clean_text(text: str) -> str:
    text = _JUNK_RE.sub("", text)
    if _ARABIC_FORMS_RE.search(text):
        text = _fix_visual_rtl(text)
    text = _COMPAT_RE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    return _SPACE_RE.sub(" ", text)


def _meaningful(text: str) -> bool:
    return bool(_WORD_CHAR_RE.search(text))


def _form(ch: str) -> str:
    dec = unicodedata.decomposition(ch)
    return dec[1:dec.index(">")] if dec.startswith("<") else ""


def _fix_visual_rtl(line: str) -> str:
    """Reverse Arabic words that a producer wrote in visual (left-to-right) order.

    Presentation forms tell the order: a logical word starts with an initial/isolated
    form and ends with a final/isolated one; a visually stored word is the mirror image.
    """
    words = line.split(" ")
    flips = keeps = 0
    for w in words:
        letters = [c for c in w if "\ufe70" <= c <= "\ufefc" or "\ufb50" <= c <= "\ufdff"]
        if len(letters) < 2:
            continue
        first, last = _form(letters[0]), _form(letters[-1])
        if first == "final" and last in ("initial", "isolated"):
            flips += 1
        elif first in ("initial", "isolated") and last in ("final", "isolated"):
            keeps += 1
    if flips <= keeps:
        return line
    # Reverse each RTL word and the order of consecutive RTL words.
    out: list[str] = []
    run: list[str] = []
    for w in words:
        if _RTL_RE.search(w):
            run.append(w[::-1])
        else:
            out.extend(reversed(run))
            run = []
            out.append(w)
    out.extend(reversed(run))
    return " ".join(out)


# ---------------------------------------------------------------------- page model

@dataclass
class _Line:
    text: str
    bbox: tuple[float, float, float, float]  # unrotated page space
    size: float
    bold: bool


@dataclass
class _Block:
    lines: list[_Line]
    bbox: tuple[float, float, float, float]
    heading: bool = False
    col: int | None = None      # column index from _reading_order; None spans columns


@dataclass
class _Figure:
    bbox: tuple[float, float, float, float]
    px: tuple[int, int]


@dataclass
class _PageData:
    number: int                 # 1-based
    width: float                # unrotated size
    height: float
    blocks: list[_Block]
    figures: list[_Figure]
    garbled: bool = False       # text layer exists but is mostly unknown glyphs
    error: str | None = None
    margins: list = field(default_factory=list)  # outer lines before header removal
    display_space: bool = False  # coordinates as displayed (OCR) instead of unrotated
    sizes: dict = field(default_factory=dict)  # font size -> characters, for the body size
    has_text: bool = False      # meaningful text before header removal
    dl: object | None = None    # display list, reused for rendering (one interpretation)


def _union(boxes) -> tuple[float, float, float, float]:
    x0s, y0s, x1s, y1s = zip(*boxes)
    return (min(x0s), min(y0s), max(x1s), max(y1s))


def _to_unrotated(page: pymupdf.Page, bbox) -> tuple[float, float, float, float]:
    r = pymupdf.Rect(bbox) * page.derotation_matrix
    return (r.x0, r.y0, r.x1, r.y1)


_BOLD_FONTS: dict[str, bool] = {}


def _font_is_bold(font: str) -> bool:
    bold = _BOLD_FONTS.get(font)
    if bold is None:
        low = font.lower()
        bold = _BOLD_FONTS[font] = any(k in low for k in ("bold", "black", "heavy", "semibold"))
    return bold


def _parse_dict(page: pymupdf.Page, d: dict, number: int, rotated_space: bool) -> _PageData:
    """Turn MuPDF's dict output into cleaned lines/blocks and figure boxes."""
    urect = page.rect * page.derotation_matrix
    width, height = urect.width, urect.height
    if rotated_space and page.rotation:
        m = page.derotation_matrix

        def fix(bb):
            r = pymupdf.Rect(bb) * m
            return (r.x0, r.y0, r.x1, r.y1)
    else:
        fix = tuple
    blocks: list[_Block] = []
    figures: list[_Figure] = []
    spans_seen = 0
    unknown = known = 0
    raw_blocks = d.get("blocks", [])
    if len(raw_blocks) > MAX_BLOCKS_PER_PAGE:
        log.warning("page %d: %d blocks, keeping the first %d", number, len(raw_blocks), MAX_BLOCKS_PER_PAGE)
        raw_blocks = raw_blocks[:MAX_BLOCKS_PER_PAGE]
    for b in raw_blocks:
        if b.get("type") == 1:
            figures.append(_Figure(fix(b["bbox"]), (int(b.get("width", 0)), int(b.get("height", 0)))))
            continue
        lines: list[_Line] = []
        for ln in b.get("lines", ()):
            spans = ln["spans"]
            spans_seen += len(spans)
            if spans_seen > MAX_SPANS_PER_PAGE:
                break
            parts: list[str] = []
            prev_x1 = -1e9
            best_size, best_n = 0.0, -1
            bold_chars = chars = 0
            for sp in spans:
                raw = sp["text"]
                if raw.isascii() and raw.isprintable():
                    # Fast path for the common case: nothing to clean but doubled spaces.
                    t = " ".join(raw.split()) if "  " in raw else raw
                    known += len(raw)
                    dropped_lead = False
                else:
                    bad = raw.count("\ufffd")
                    unknown += bad
                    known += len(raw) - bad
                    t = _clean_text(raw)
                    dropped_lead = _JUNK_RE.match(raw) is not None
                n = len(t) - t.count(" ")
                if not n:
                    continue
                bb = sp["bbox"]
                if parts and t[0] != " " and parts[-1][-1] != " ":
                    # Spans that abut without a space but sit apart on the page (or were
                    # separated by unknown glyphs) are separate words.
                    if dropped_lead or bb[0] - prev_x1 > 0.15 * sp["size"]:
                        parts.append(" ")
                parts.append(t)
                prev_x1 = bb[2]
                chars += n
                if n > best_n:
                    best_size, best_n = sp["size"], n
                if sp["flags"] & 16:
                    bold_chars += n
                else:
                    font = sp["font"]
                    bold = _BOLD_FONTS.get(font)
                    if bold is None:
                        bold = _font_is_bold(font)
                    if bold:
                        bold_chars += n
            if not parts:
                continue
            text = "".join(parts).strip()
            lines.append(_Line(text, fix(ln["bbox"]), round(best_size, 1), bold_chars * 2 > chars))
        if lines:
            # MuPDF's block box, unless lines were dropped (junk glyphs) and it would be too big.
            blocks.append(_Block(lines, fix(b["bbox"]) if len(lines) == len(b["lines"]) else _union(l.bbox for l in lines)))
        if spans_seen > MAX_SPANS_PER_PAGE:
            log.warning("page %d: more than %d text spans, rest ignored", number, MAX_SPANS_PER_PAGE)
            break
    garbled = unknown > 0 and unknown >= known
    if garbled:
        blocks = []
    has_text = any(_meaningful(l.text) for bl in blocks for l in bl.lines)
    sizes: dict[float, int] = {}
    for bl in blocks:
        for l in bl.lines:
            sizes[l.size] = sizes.get(l.size, 0) + len(l.text)
    return _PageData(number, width, height, blocks, figures, garbled=garbled, has_text=has_text, sizes=sizes)


_IMAGE_SIZE_RE = re.compile(r"width: (\d+), height: (\d+)")


def _textpage(page: pymupdf.Page, dl, flags: int) -> pymupdf.TextPage:
    """A textpage from the display list when there is one (no second interpretation)."""
    if dl is None:
        return page.get_textpage(flags=flags)
    tp = dl.get_textpage(flags)
    if not isinstance(tp, pymupdf.TextPage):  # some PyMuPDF releases return the raw MuPDF object
        tp = pymupdf.TextPage(tp)
    return tp


def _load_page(doc: pymupdf.Document, number: int, render: bool = True) -> _PageData:
    """Parse one page (1-based); never raises: a broken page becomes an error record."""
    try:
        page = doc[number - 1]
        # Image blocks come from a textpage that keeps images, read with "blocks" (bbox and
        # size only): its "dict" would re-encode every picture (50-170 ms on a photo
        # page). Only pages that have images pay for a second, image-free textpage.
        dl = page.get_displaylist(annots=True) if render else None
        tp = _textpage(page, dl, TEXT_FLAGS | pymupdf.TEXT_PRESERVE_IMAGES)
        images = [b for b in tp.extractBLOCKS() if b[6] == 1]
        if images:
            tp = _textpage(page, dl, TEXT_FLAGS)
        data = _parse_dict(page, tp.extractDICT(), number, rotated_space=render)
        for b in images:
            m = _IMAGE_SIZE_RE.search(b[4])
            bbox = _to_unrotated(page, b[:4]) if render and page.rotation else tuple(b[:4])
            data.figures.append(_Figure(bbox, (int(m.group(1)), int(m.group(2))) if m else (0, 0)))
        data.dl = dl
        data.margins = _margin_lines(data)
        return data
    except PAGE_ERRORS as exc:
        log.warning("page %d could not be read, emitting it as an image: %s", number, exc)
        try:
            r = doc[number - 1].rect
            w, h = r.width, r.height
        except Exception:
            w = h = 0.0
        return _PageData(number, w, h, [], [], error=str(exc) or type(exc).__name__)


# ----------------------------------------------------------- headers and footers

# "12", "- 12 -", "Page 3 of 10", "Seite 3 von 10", "iv" (a well-formed roman numeral, so
# words such as "mild" or "did" are not taken for folios).
_PAGE_NUM_RE = re.compile(
    r"^(?:page|seite|pg\.?|p\.|s\.)?\s*[-–—(\[]?\s*"
    r"(?:\d{1,5}|(?=[ivxlcdm])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3}))"
    r"\s*[-–—)\]]?(?:\s*(?:/|of|von|de|sur)\s*\d{1,5})?$", re.IGNORECASE)
_DIGITS_RE = re.compile(r"\d+")


def _norm(text: str) -> str:
    return _DIGITS_RE.sub("#", text.lower()).strip()


def _margin_lines(pd: _PageData) -> list[tuple[str, float, bool]]:
    """(normalised text, y0, top?) of lines lying in the page's top or bottom band."""
    out = []
    band = pd.height * HEADER_BAND
    for b in pd.blocks:
        for ln in b.lines:
            if ln.bbox[3] <= band:
                out.append((_norm(ln.text), ln.bbox[1], True))
            elif ln.bbox[1] >= pd.height - band:
                out.append((_norm(ln.text), ln.bbox[1], False))
    return out


def _strip_headers(pd: _PageData, neighbours: list[_PageData]) -> None:
    """Drop page numbers and running headers/footers from the outer rows of a page.

    A line counts as running text when the same digit-normalised text sits at about
    the same height on enough neighbouring pages. Only rows between the page edge and
    the first non-repeating row are candidates, so body text is never touched.
    """
    if not pd.blocks:
        return
    others = [n.margins for n in neighbours if n.margins and abs(n.height - pd.height) < 20]
    need = 2 if len(others) >= 3 else 1

    sizes: dict[float, int] = {}
    for b in pd.blocks:
        for ln in b.lines:
            sizes[ln.size] = sizes.get(ln.size, 0) + len(ln.text)
    body = max(sizes, key=sizes.get)

    def repeated(ln: _Line) -> bool:
        # Running headers are set at body size or smaller; a larger line repeating at the
        # same spot is a templated heading ("Section 3 overview") and stays.
        if not others or ln.size > body * 1.1:
            return False
        key = _norm(ln.text)
        hits = 0
        for lines in others:
            if any(k == key and abs(y - ln.bbox[1]) <= HEADER_Y_TOLERANCE for k, y, _ in lines):
                hits += 1
                if hits >= need:
                    return True
        return False

    band = pd.height * PAGE_NUMBER_BAND
    repeat_band = pd.height * HEADER_BAND
    all_lines = [(ln, b) for b in pd.blocks for ln in b.lines]
    drop: set[int] = set()
    # Walk rows inward from the top edge, then from the bottom edge.
    for top in (True, False):
        ordered = sorted(all_lines, key=lambda lb: lb[0].bbox[1] if top else -lb[0].bbox[3])
        i = 0
        while i < len(ordered):
            ln = ordered[i][0]
            in_band = ln.bbox[3] <= band if top else ln.bbox[1] >= pd.height - band
            if not in_band:
                break
            # All lines of one row (e.g. page number left, title right) are judged together.
            row_y = ln.bbox[1] if top else ln.bbox[3]
            row = [lb for lb in ordered[i:]
                   if abs((lb[0].bbox[1] if top else lb[0].bbox[3]) - row_y) <= 3]
            i += len(row)
            verdicts = [bool(_PAGE_NUM_RE.match(r[0].text.strip()))
                        or ((r[0].bbox[3] <= repeat_band if top else r[0].bbox[1] >= pd.height - repeat_band)
                            and repeated(r[0]))
                        for r in row]
            for r, v in zip(row, verdicts):
                if v:
                    drop.add(id(r[0]))
            if not all(verdicts):
                break
    if not drop:
        return
    kept = []
    for b in pd.blocks:
        lines = [ln for ln in b.lines if id(ln) not in drop]
        if lines:
            kept.append(_Block(lines, _union(l.bbox for l in lines), b.heading))
    if not any(_meaningful(l.text) for b in kept for l in b.lines):
        # Every page repeats the same lines (a one-line form, a label sheet): that IS the
        # content. Drop only the page numbers.
        kept = []
        for b in pd.blocks:
            lines = [ln for ln in b.lines if not _PAGE_NUM_RE.match(ln.text.strip())]
            if lines:
                kept.append(_Block(lines, _union(l.bbox for l in lines), b.heading))
    pd.blocks = kept


# ------------------------------------------------------------------ reading order

def _find_gutters(blocks: list[_Block]) -> list[tuple[float, float]]:
    """Vertical white strips separating side-by-side columns of text blocks."""
    if len(blocks) < 2:
        return []
    x0 = min(b.bbox[0] for b in blocks)
    x1 = max(b.bbox[2] for b in blocks)
    width = x1 - x0
    if width < 100:
        return []
    # Full-width blocks (titles, abstracts, tables) would hide the gutter: ignore them.
    narrow = [b for b in blocks if (b.bbox[2] - b.bbox[0]) < 0.6 * width and len(b.lines) > 0]
    if len(narrow) < 2:
        return []
    nbins = int(width // 2) + 1
    cov = np.zeros(nbins)
    for b in narrow:
        i0 = int((b.bbox[0] - x0) // 2)
        i1 = int((b.bbox[2] - x0) // 2)
        # Single-line blocks (centred author/date lines, labels) count little: they often
        # sit over the gutter above the columns.
        weight = 1.0 if len(b.lines) > 1 else 0.25
        cov[i0:i1 + 1] += (b.bbox[3] - b.bbox[1]) * weight
    limit = 0.05 * cov.max()
    free = cov <= limit
    gutters = []
    i = 0
    while i < nbins:
        if not free[i]:
            i += 1
            continue
        j = i
        while j < nbins and free[j]:
            j += 1
        g0, g1 = x0 + i * 2, x0 + j * 2
        if i > 0 and j < nbins and g1 - g0 >= 4:
            left = [b for b in narrow if (b.bbox[0] + b.bbox[2]) / 2 < g0]
            right = [b for b in narrow if (b.bbox[0] + b.bbox[2]) / 2 > g1]
            if left and right and _side_by_side(left, right, width):
                gutters.append((g0, g1))
        i = j
    return gutters


def _side_by_side(left: list[_Block], right: list[_Block], width: float) -> bool:
    """Both sides hold real text and overlap vertically, as columns do.

    Figure labels ("x", "(a) Sinus") scattered left and right of a white strip inside a
    drawing must not pass: each side needs some text mass and some width.
    """
    for side in (left, right):
        chars = sum(len(l.text) for b in side for l in b.lines)
        extent = max(b.bbox[2] for b in side) - min(b.bbox[0] for b in side)
        if chars < 150 or extent < 0.25 * width:
            return False
    def span(bs):
        return min(b.bbox[1] for b in bs), max(b.bbox[3] for b in bs), sum(b.bbox[3] - b.bbox[1] for b in bs)
    l0, l1, lh = span(left)
    r0, r1, rh = span(right)
    overlap = min(l1, r1) - max(l0, r0)
    lines_l = sum(len(b.lines) for b in left)
    lines_r = sum(len(b.lines) for b in right)
    return overlap > 0.3 * min(lh, rh) and lines_l >= 3 and lines_r >= 3


def _reading_order(blocks: list[_Block], rtl: bool = False) -> list[_Block]:
    """Blocks in reading order: columns top to bottom, separated by full-width blocks."""
    if not blocks:
        return []
    gutters = _find_gutters(blocks)
    if not gutters:
        for b in blocks:
            b.col = 0
        return sorted(blocks, key=lambda b: (round(b.bbox[1], 0), b.bbox[0]))
    bounds = [g for gap in gutters for g in gap]

    def column(b: _Block) -> int | None:
        for g0, g1 in gutters:
            if b.bbox[0] < g0 - 2 and b.bbox[2] > g1 + 2:
                return None  # crosses a gutter: spans columns
        cx = (b.bbox[0] + b.bbox[2]) / 2
        return sum(1 for x in bounds[::2] if cx > x)

    ordered: list[_Block] = []
    section: list[tuple[int, _Block]] = []

    def flush():
        section.sort(key=lambda cb: ((-cb[0] if rtl else cb[0]), cb[1].bbox[1], cb[1].bbox[0]))
        ordered.extend(b for _, b in section)
        section.clear()

    for b in sorted(blocks, key=lambda b: (b.bbox[1], b.bbox[0])):
        col = b.col = column(b)
        if col is None:
            flush()
            ordered.append(b)
        else:
            section.append((col, b))
    flush()
    return ordered


# ------------------------------------------------------------------------ chunking

def _mark_headings(blocks: list[_Block], body_size: float) -> None:
    for b in blocks:
        words = sum(len(l.text.split()) for l in b.lines)
        if len(b.lines) > 3 or words > 20 or words == 0:
            continue
        size = max(l.size for l in b.lines)
        last = b.lines[-1].text.rstrip()
        larger = body_size > 0 and size >= body_size * 1.15
        bold = all(l.bold for l in b.lines)
        if (larger or bold) and not last.endswith((".", ",", ";")) or (larger and words <= 12):
            b.heading = True


def _join_hyphen(prev: str, nxt: str) -> bool:
    return len(prev) >= 2 and prev[-1] in "-\u2010\u00ad" and prev[-2].isalpha() and nxt[:1].isalpha()


def _joined(prev: str, nxt: str) -> str:
    # "exam-" + "ple" → "example"; "Hausdorff-" + "Räume" keeps the hyphen of a compound.
    if prev[-1] == "\u00ad" or nxt[0].islower():
        return prev[:-1] + nxt
    return prev + nxt


def _estimate_tokens(text: str) -> float:
    """Approximate subword tokens: ~1.3 per word, at least one per 4 characters."""
    return max(1.3 * (text.count(" ") + 1), len(text) / 4.0)


@dataclass
class _Piece:
    text: str
    bbox: tuple[float, float, float, float]
    heading: str | None


def _join_lines(items: list[tuple[str, tuple, float]]) -> str:
    out = ""
    for text, _, _ in items:
        if not out:
            out = text
        elif _join_hyphen(out, text):
            out = _joined(out, text)
        else:
            out = out + " " + text
    return out


def _split_long_line(text: str, bbox: tuple, target: float) -> list[tuple[str, tuple, float]]:
    """Cut a line longer than the target at word boundaries (characters for CJK runs)."""
    limit = max(8, int(target * 4 * 0.8))
    words: list[str] = []
    for w in text.split(" "):
        # Scripts without spaces arrive as one giant "word": the only case cut inside.
        words.extend(w[i:i + limit] for i in range(0, len(w), limit)) if len(w) > limit else words.append(w)
    out: list[tuple[str, tuple, float]] = []
    cur: list[str] = []
    for w in words:
        if cur and _estimate_tokens(" ".join(cur + [w])) > target * 0.8:
            t = " ".join(cur)
            out.append((t, bbox, _estimate_tokens(t)))
            cur = []
        cur.append(w)
    if cur:
        t = " ".join(cur)
        out.append((t, bbox, _estimate_tokens(t)))
    return out


def _chunk_page(blocks: list[_Block], target: float, overlap: float, heading: str | None
                ) -> tuple[list[_Piece], str | None]:
    """Merge ordered blocks into ~target-token pieces; a heading sticks to what follows.

    Works on whole lines (cheap; line ends are word ends) and only cuts a line into
    words for the overlap tail or when one line alone exceeds the target.
    """
    pieces: list[_Piece] = []
    cur: list[tuple[str, tuple, float]] = []   # (line text, line bbox, tokens)
    cur_tok = 0.0
    cur_heading = heading
    held = False                        # the chunk ends in a heading: must take more text

    def flush(keep_overlap: bool) -> None:
        nonlocal cur, cur_tok
        if not cur:
            return
        carry: list[tuple[str, tuple, float]] = []
        if len(cur) > 1 and cur[-1][0][-1:] in ("-", "\u2010", "\u00ad"):
            # Never cut between the halves of a hyphenated word: move the line on.
            carry = [cur.pop()]
        pieces.append(_Piece(_join_lines(cur), _union(bb for _, bb, _ in cur), cur_heading))
        tail: list[tuple[str, tuple, float]] = []
        if keep_overlap and overlap > 0:
            budget = overlap - sum(t for _, _, t in carry)
            for text, bb, tok in reversed(cur):
                if tok <= budget:
                    tail.append((text, bb, tok))
                    budget -= tok
                    continue
                words = text.split(" ")
                part: list[str] = []
                for w in reversed(words[1:]):  # never the whole line: it did not fit
                    t = _estimate_tokens(" ".join([w] + part))
                    if t > budget:
                        break
                    part.insert(0, w)
                if part:
                    t = " ".join(part)
                    tail.append((t, bb, _estimate_tokens(t)))
                break
        cur = tail[::-1] + carry
        cur_tok = sum(t for _, _, t in cur)

    prev_col: int | None = -1
    for b in blocks:
        if not b.lines:
            continue
        if b.col != prev_col and cur and not held and prev_col != -1 and cur_tok >= 0.25 * target:
            # A snippet stays within one column so its image is one tidy rectangle.
            flush(keep_overlap=False)
        prev_col = b.col
        items = []
        for ln in b.lines:
            tok = _estimate_tokens(ln.text)
            if tok > target * 0.8:
                items.extend(_split_long_line(ln.text, ln.bbox, target))
            else:
                items.append((ln.text, ln.bbox, tok))
        block_tok = sum(t for _, _, t in items)
        if b.heading:
            if cur and not held:
                flush(keep_overlap=False)
            heading_text = _join_lines(items)[:200]
            # Consecutive headings (chapter, then section) are kept as "outer / inner".
            cur_heading = f"{cur_heading.split(' / ')[-1]} / {heading_text}" if held and cur_heading else heading_text
            cur.extend(items)
            cur_tok += block_tok
            held = True
            continue
        if cur and not held and cur_tok + block_tok > target and cur_tok >= target * 0.5:
            flush(keep_overlap=False)  # block boundary: a clean cut needs no overlap
        for item in items:
            if cur and cur_tok + item[2] > target and cur_tok >= target * 0.5:
                flush(keep_overlap=True)
            cur.append(item)
            cur_tok += item[2]
        held = False
    if cur:
        pieces.append(_Piece(_join_lines(cur), _union(bb for _, bb, _ in cur), cur_heading))
    return pieces, cur_heading


# ------------------------------------------------------------------------ rendering

class _PageRender:
    """One rendering of the needed part of a page, cropped per snippet."""

    def __init__(self, page: pymupdf.Page, pd: _PageData, region, dpi: float, color: bool):
        zoom = dpi / 72.0
        self.zoom = zoom
        if pd.display_space:
            clip = pymupdf.Rect(region)
            matrix = pymupdf.Matrix(zoom, zoom)
        else:
            # Text is upright in unrotated space: crop there so rotated pages give upright images.
            clip = pymupdf.Rect(region) * page.rotation_matrix  # display list space is rotated
            matrix = page.derotation_matrix * pymupdf.Matrix(zoom, zoom)
        cs = pymupdf.csRGB if color else pymupdf.csGRAY
        # 4 bits of anti-aliasing (16 levels) instead of 8: the PNGs are posterised to 16
        # gray levels anyway, and rasterising gets ~15% faster.
        prev = pymupdf.TOOLS.show_aa_level()
        pymupdf.TOOLS.set_aa_level(RENDER_AA_BITS)
        try:
            if pd.dl is not None:
                pix = pd.dl.get_pixmap(matrix=matrix, colorspace=cs, alpha=False, clip=clip)
            else:
                pix = page.get_pixmap(matrix=matrix, colorspace=cs, alpha=False, clip=clip)
        finally:
            pymupdf.TOOLS.set_aa_level(prev.get("text", 8))
        self.origin = (pix.x, pix.y)
        self.image = Image.frombytes("RGB" if color else "L", (pix.width, pix.height), pix.samples)

    def crop(self, bbox, max_px: int, pad: float = 2.0) -> Image.Image | None:
        z = self.zoom
        box = (int(math.floor(bbox[0] * z - self.origin[0] - pad)), int(math.floor(bbox[1] * z - self.origin[1] - pad)),
               int(math.ceil(bbox[2] * z - self.origin[0] + pad)), int(math.ceil(bbox[3] * z - self.origin[1] + pad)))
        w, h = self.image.size
        box = (max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3]))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            return None
        img = self.image.crop(box)
        if max(img.size) > max_px:
            img.thumbnail((max_px, max_px), Image.LANCZOS)
        return img


def _render_whole_page(page: pymupdf.Page, max_px: int, dpi: float, native_px: int = 0) -> Image.Image:
    """The page as displayed (rotation applied) with its long side at most max_px."""
    long_pt = max(page.rect.width, page.rect.height, 1.0)
    # Tiny pages holding a bigger bitmap (ImageMagick writes 16-px images on 4-pt pages)
    # render at the bitmap's resolution instead of a handful of pixels.
    zoom = max(dpi / 72.0, native_px / long_pt if native_px else 0.0)
    zoom = min(zoom, max_px / long_pt)
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)


# ---------------------------------------------------------------------------- OCR

_TESSDATA: str | None | bool = False  # False = not looked up yet


def _tessdata() -> str | None:
    """Folder of tesseract's language data, or None when OCR is unavailable."""
    global _TESSDATA
    if _TESSDATA is not False:
        return _TESSDATA  # type: ignore[return-value]
    found = None
    if shutil.which("tesseract"):
        candidates = [os.environ.get("TESSDATA_PREFIX", "")]
        try:
            candidates.append(pymupdf.get_tessdata() or "")
        except Exception:
            pass
        candidates += sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata"), reverse=True)
        candidates += ["/usr/share/tessdata", "/usr/local/share/tessdata"]
        for c in candidates:
            if c and glob.glob(os.path.join(c, "*.traineddata")):
                found = c
                break
        if found is None:
            log.warning("tesseract is installed but no tessdata folder was found; OCR disabled")
    _TESSDATA = found
    return found


def _ocr_page(page: pymupdf.Page, number: int, language: str, native_dpi: float) -> _PageData | None:
    """OCR a page without a text layer; None when OCR is unavailable or fails."""
    tessdata = _tessdata()
    if tessdata is None:
        return None
    urect = page.rect
    if min(urect.width, urect.height) < 36:
        return None  # stamps and icons: tesseract finds nothing and may crash on them
    dpi = int(min(OCR_DPI_MAX, max(OCR_DPI_MIN, native_dpi or 0)))
    try:
        # OCR the page as displayed: Page.get_textpage_ocr renders it unrotated, so a scan
        # stored sideways with /Rotate (the usual case) would reach tesseract sideways.
        zoom = dpi / 72.0
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False)
        pix.set_dpi(dpi, dpi)  # the OCR page then measures in the page's own points
        with pymupdf.open("pdf", pix.pdfocr_tobytes(compress=False, language=language, tessdata=tessdata)) as ocr:
            d = ocr[0].get_text("dict", flags=TEXT_FLAGS)
    except PAGE_ERRORS as exc:
        log.warning("page %d: OCR failed: %s", number, exc)
        return None
    pd = _parse_dict(page, d, number, rotated_space=False)
    pd.display_space = True
    pd.width, pd.height = page.rect.width, page.rect.height
    # Tesseract "reads" photos as scattered symbols; demand a few real words.
    words = [w for b in pd.blocks for l in b.lines for w in l.text.split() if sum(c.isalpha() for c in w) >= 3]
    return pd if len(words) >= 3 else None


# ---------------------------------------------------------------------- extraction

_CAPTION_RE = re.compile(
    r"^(fig(?:ure)?|abb(?:ildung)?|table|tab|tabelle|chart|diagram|plate|image|photo|exhibit|illustration)"
    r"\.?\s*[\dIVXivx]+[.:\-–—)]?", re.IGNORECASE)


def _find_caption(fig: _Figure, blocks: list[_Block]) -> str:
    best, best_gap = "", 1e9
    fx0, fy0, fx1, fy1 = fig.bbox
    for b in blocks:
        text = " ".join(l.text for l in b.lines)
        if not _CAPTION_RE.match(text):
            continue
        bx0, by0, bx1, by1 = b.bbox
        if bx1 < fx0 - 20 or bx0 > fx1 + 20:
            continue  # not horizontally aligned with the figure
        gap = by0 - fy1 if by0 >= fy1 - 5 else fy0 - by1
        if -5 <= gap <= 48 and gap < best_gap:
            best, best_gap = _join_lines([(l.text, l.bbox, 0.0) for l in b.lines]), gap
    return best


def _page_snippets(doc: pymupdf.Document, pd: _PageData, document_id: str | None, state: dict,
                   opts: dict, body_size: float = 0.0) -> list[Snippet]:
    """All snippets of one parsed page (text/figure/ocr/page kinds)."""
    page = doc[pd.number - 1]
    max_px = opts["image_max_px"]
    base = pd.number * 1000
    figures = [f for f in pd.figures
               if (f.bbox[2] - f.bbox[0]) >= MIN_FIGURE_PT and (f.bbox[3] - f.bbox[1]) >= MIN_FIGURE_PT
               and (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) >= MIN_FIGURE_AREA_FRACTION * pd.width * pd.height]
    kind = "text"
    if not pd.has_text and pd.error is None:
        # No (usable) text layer: a scan. OCR it, or hand out the page as an image.
        native = max((f.px[0] / max(f.bbox[2] - f.bbox[0], 1) * 72 for f in pd.figures), default=0)
        ocr = _ocr_page(page, pd.number, opts["ocr_language"], native) if opts["ocr"] else None
        if ocr is None:
            return [_whole_page_snippet(page, pd, document_id, opts, {"no_text_layer": True,
                                                                       **({"garbled_text": True} if pd.garbled else {})})]
        pd = _PageData(pd.number, ocr.width, ocr.height, ocr.blocks, [], dl=pd.dl, has_text=True,
                       display_space=True)
        figures = []
        kind = "ocr"
    if pd.error is not None:
        return [_whole_page_snippet(page, pd, document_id, opts, {"error": pd.error})]

    rtl = sum(len(_RTL_RE.findall(l.text)) for b in pd.blocks for l in b.lines) > \
        sum(len(l.text) for b in pd.blocks for l in b.lines) / 2
    blocks = _reading_order(pd.blocks, rtl=rtl)
    _mark_headings(blocks, body_size)
    pieces, state["heading"] = _chunk_page(blocks, opts["target_tokens"], opts["overlap_tokens"], state.get("heading"))
    if len(pieces) + len(figures) > MAX_SNIPPETS_PER_PAGE:
        log.warning("page %d: %d snippets, keeping %d", pd.number, len(pieces) + len(figures), MAX_SNIPPETS_PER_PAGE)
        figures = figures[:max(0, MAX_SNIPPETS_PER_PAGE - len(pieces))]
        pieces = pieces[:MAX_SNIPPETS_PER_PAGE - len(figures)]

    render = None
    if opts["images"] and (pieces or figures):
        region = _union([p.bbox for p in pieces] + [f.bbox for f in figures])
        region = (max(0.0, region[0] - 2), max(0.0, region[1] - 2),
                  min(pd.width, region[2] + 2), min(pd.height, region[3] + 2))
        try:
            render = _PageRender(page, pd, region, opts["dpi"], color=bool(figures))
        except PAGE_ERRORS as exc:
            log.warning("page %d: rendering failed, snippets have no image: %s", pd.number, exc)

    out: list[Snippet] = []
    to_page = pymupdf.Identity if pd.display_space else page.rotation_matrix
    for p in pieces:
        meta = {"heading": p.heading} if p.heading else {}
        img = render.crop(p.bbox, max_px) if render else None
        if img is not None and img.mode != "L":
            img = img.convert("L")  # text regions are read, not admired: grayscale
        out.append(Snippet(text=p.text, image=img, page=pd.number, bbox=_page_box(p.bbox, to_page, page),
                           document_id=document_id, ordinal=base + len(out), kind=kind, meta=meta))
    for f in sorted(figures, key=lambda f: (f.bbox[1], f.bbox[0])):
        caption = _find_caption(f, blocks)
        meta = {"caption": caption} if caption else {}
        if state.get("heading"):
            meta["heading"] = state["heading"]
        img = render.crop(f.bbox, max_px, pad=0) if render else None
        out.append(Snippet(text=caption, image=img, page=pd.number, bbox=_page_box(f.bbox, to_page, page),
                           document_id=document_id, ordinal=base + len(out), kind="figure", meta=meta))
    if not out:
        # Text existed but nothing survived (e.g. only a page number): still say so.
        return [_whole_page_snippet(page, pd, document_id, opts, {"no_text_layer": False, "no_content": True})]
    return out


def _page_box(bbox, to_page: pymupdf.Matrix, page: pymupdf.Page) -> tuple[float, float, float, float]:
    r = (pymupdf.Rect(bbox) * to_page) & page.rect
    return (round(r.x0, 2), round(r.y0, 2), round(r.x1, 2), round(r.y1, 2))


def _whole_page_snippet(page: pymupdf.Page, pd: _PageData, document_id: str | None, opts: dict,
                        meta: dict) -> Snippet:
    img = None
    if opts["images"]:
        native = max((f.px[0] for f in pd.figures), default=0)
        try:
            img = _render_whole_page(page, opts["image_max_px"], opts["dpi"], native)
        except PAGE_ERRORS as exc:
            log.warning("page %d: could not be rendered: %s", pd.number, exc)
    r = page.rect
    return Snippet(text="", image=img, page=pd.number, bbox=(r.x0, r.y0, r.x1, r.y1), document_id=document_id,
                   ordinal=pd.number * 1000, kind="page", meta=meta)


def _page(doc: pymupdf.Document, number: int) -> pymupdf.Page:
    """Page `number` (1-based); a page the page tree counts but cannot deliver means a damaged file."""
    try:
        return doc[number - 1]
    except (IndexError, ValueError, RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
        raise PDFError("corrupt", f"This PDF is damaged: its page {number} cannot be found ({exc}).") from exc


def iter_snippet_batches(source: bytes | str | Path, document_id: str | None = None, *, start_page: int = 1,
                         end_page: int | None = None, batch_pages: int = 8, target_tokens: int = 300,
                         overlap_tokens: int = 40, image_max_px: int = 1024, ocr: bool = True,
                         progress: Callable[[int, int], None] | None = None, images: bool = True,
                         dpi: int = DEFAULT_DPI, ocr_language: str = "eng") -> Iterator[list[Snippet]]:
    """Yield the snippets of every `batch_pages` pages of [start_page, end_page], streaming."""
    doc = _open(source)
    try:
        n = doc.page_count
        start = max(1, start_page)
        end = n if end_page is None else min(n, end_page)
        if start > end:
            return
        total = end - start + 1
        opts = dict(target_tokens=max(10, target_tokens), overlap_tokens=max(0, min(overlap_tokens, target_tokens // 2)),
                    image_max_px=max(16, image_max_px), ocr=ocr, images=images, dpi=dpi, ocr_language=ocr_language)
        cache: dict[int, _PageData] = {}
        state: dict = {}
        done = 0
        for bstart in range(start, end + 1, max(1, batch_pages)):
            bend = min(end, bstart + max(1, batch_pages) - 1)
            batch: list[Snippet] = []
            for num in range(bstart, bend + 1):
                window = range(max(1, num - HEADER_WINDOW), min(n, num + HEADER_WINDOW) + 1)
                for w in window:
                    if w not in cache:
                        cache[w] = _load_page(doc, w, render=images)
                for old in [k for k in cache if k < num - HEADER_WINDOW]:
                    del cache[old]
                pd = cache[num]
                if pd.blocks:
                    _strip_headers(pd, [cache[w] for w in window if w != num])
                # Body font size over the same window of pages (a title page alone would
                # call its title "body"); independent of start_page, so ordinals are stable.
                sizes: dict[float, int] = {}
                for w in window:
                    for size, count in cache[w].sizes.items():
                        sizes[size] = sizes.get(size, 0) + count
                body = max(sizes, key=sizes.get) if sizes else 0.0
                try:
                    batch.extend(_page_snippets(doc, pd, document_id, state, opts, body))
                except PAGE_ERRORS as exc:
                    log.warning("page %d: extraction failed, emitting it as an image: %s", num, exc, exc_info=True)
                    pd_err = _PageData(num, pd.width, pd.height, [], pd.figures, error=str(exc))
                    batch.append(_whole_page_snippet(_page(doc, num), pd_err, document_id, opts, {"error": str(exc)}))
                pd.dl = None  # the page's display list is only needed for its own render
            done += bend - bstart + 1
            if progress is not None:
                progress(done, total)
            yield batch
    finally:
        doc.close()


def extract_snippets(source: bytes | str | Path, document_id: str | None = None, **options) -> list[Snippet]:
    """All snippets of a document (every batch of iter_snippet_batches, concatenated)."""
    out: list[Snippet] = []
    for batch in iter_snippet_batches(source, document_id, **options):
        out.extend(batch)
    return out
