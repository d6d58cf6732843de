"""OCR of pages without a usable text layer, through tesseract (via MuPDF)."""
from __future__ import annotations

import glob
import logging
import os
import shutil

import pymupdf

from .errors import PAGE_ERRORS
from .layout import TEXT_FLAGS, _PageData, _parse_dict

log = logging.getLogger(__name__)

OCR_DPI_MIN, OCR_DPI_MAX = 150, 300

_TESSDATA: str | None | bool = False  # False = not looked up yet


def _tessdata_candidates() -> list[str]:
    """Folders that may hold tesseract's language data, most specific first."""
    candidates = [os.environ.get("TESSDATA_PREFIX", "")]
    try:
        candidates.append(pymupdf.get_tessdata() or "")
    except Exception:
        pass
    candidates += sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata"), reverse=True)
    candidates += ["/usr/share/tessdata", "/usr/local/share/tessdata"]
    return candidates


def _tessdata() -> str | None:
    """Folder of tesseract's language data, or None when OCR is unavailable."""
    global _TESSDATA
    if _TESSDATA is not False:
        return _TESSDATA  # type: ignore[return-value]
    found = None
    if shutil.which("tesseract"):
        found = next((c for c in _tessdata_candidates() if c and glob.glob(os.path.join(c, "*.traineddata"))), None)
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
    words = [w for b in pd.blocks for ln in b.lines for w in ln.text.split() if sum(c.isalpha() for c in w) >= 3]
    return pd if len(words) >= 3 else None
