"""Rendering pages: one render per page cropped per snippet, whole pages, and UI thumbnails."""
from __future__ import annotations

import io
import math
from pathlib import Path

import pymupdf
from PIL import Image

from .document import _open
from .layout import _PageData

# 100 dpi: 10-pt body text becomes ~14 px tall (comfortably legible), a 450-pt text
# column ~625 px wide, so typical snippets stay under the 1024-px cap without
# resampling; 150 dpi costs ~20-30% more render time and 2.2x the pixels (and bytes)
# for no gain on screen.
DEFAULT_DPI = 100
# Bounds of a rendered page image, whatever width is asked for.
MAX_RENDER_SIDE = 4000
MAX_RENDER_PIXELS = 12_000_000
RENDER_AA_BITS = 4


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
        # 4 bits of anti-aliasing (16 levels) instead of 8: the text PNGs keep only 8 gray
        # levels (imaging.TEXT_GRAY_LEVELS) anyway, and rasterising gets ~15% faster.
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
        """The rendered part under bbox (page points), padded, its long side at most max_px."""
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


def render_page_thumbnail(source: bytes | str | Path, page: int, width: int = 240,
                          max_height: int | None = None) -> bytes:
    """PNG bytes of one page (1-based) scaled to `width` pixels, for the web UI.

    A page far taller than wide would otherwise become an image of any size: its long side
    is held to MAX_RENDER_SIDE pixels and its area to MAX_RENDER_PIXELS, whatever `width` asks,
    and to max_height pixels tall when given (thumbnails).
    """
    doc = _open(source)
    try:
        if not 1 <= page <= doc.page_count:
            raise ValueError(f"page {page} out of range 1..{doc.page_count}")
        pg = doc[page - 1]
        rect = pg.rect
        zoom = guarded_zoom(rect.width, rect.height, width)
        if max_height:
            zoom = min(zoom, max(max_height, 1) / max(rect.height, 1.0))
        pix = pg.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
        img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()
    finally:
        doc.close()


def guarded_zoom(width_pt: float, height_pt: float, width_px: int) -> float:
    """The zoom that gives width_px pixels across, reduced to keep the image within the render bounds."""
    w, h = max(width_pt, 1.0), max(height_pt, 1.0)
    zoom = max(width_px, 1) / w
    zoom = min(zoom, MAX_RENDER_SIDE / max(w, h))
    return min(zoom, math.sqrt(MAX_RENDER_PIXELS / (w * h)))


def page_size(source: bytes | str | Path, page: int) -> tuple[float, float]:
    """(width, height) in points of one page (1-based) as displayed, rotation applied."""
    doc = _open(source)
    try:
        if not 1 <= page <= doc.page_count:
            raise ValueError(f"page {page} out of range 1..{doc.page_count}")
        rect = doc[page - 1].rect
        return float(rect.width), float(rect.height)
    finally:
        doc.close()


# Snippet kinds whose image is a picture rather than text to read: rendered in colour.
COLOR_KINDS = frozenset({"figure", "page"})
# Padding around a region, in points (the eager crop pads 2 px at 100 dpi).
REGION_PAD_PT = 1.5


def render_regions(source: bytes | str | Path, regions: list[tuple[int, tuple, str]], max_px: int = 1024,
                   dpi: float = DEFAULT_DPI) -> list[Image.Image | None]:
    """Region images of snippets stored without one: (page, display-space bbox, kind) each.

    The PDF is opened once and each page rendered once, over the union of its regions, as the
    extraction's eager path does. Text regions of pages with a /Rotate are rendered upright.
    """
    doc = _open(source)
    try:
        out: list[Image.Image | None] = [None] * len(regions)
        by_page: dict[int, list[int]] = {}
        for i, (page, _bbox, _kind) in enumerate(regions):
            if 1 <= page <= doc.page_count:
                by_page.setdefault(page, []).append(i)
        for page, indexes in by_page.items():
            _render_page_regions(doc[page - 1], [(i, regions[i]) for i in indexes], out, max_px, dpi)
        return out
    finally:
        doc.close()


def _render_page_regions(page: pymupdf.Page, items: list, out: list, max_px: int, dpi: float) -> None:
    """Fill out[i] for each (i, (page, bbox, kind)) of one page."""
    boxes = []
    for i, (_page, bbox, kind) in items:
        if kind == "page" or not bbox:
            # As extraction does: a tiny page holding a bigger bitmap renders at the bitmap's size.
            native = max((int(info.get("width") or 0) for info in page.get_image_info()), default=0)
            out[i] = _render_whole_page(page, max_px, dpi, native)
        else:
            boxes.append((i, pymupdf.Rect(bbox) & page.rect, kind in COLOR_KINDS))
    boxes = [b for b in boxes if not b[1].is_empty]
    if not boxes:
        return
    union = pymupdf.Rect(boxes[0][1])
    for _, rect, _ in boxes[1:]:
        union |= rect
    zoom = min(dpi / 72.0, guarded_zoom(union.width, union.height, int(union.width * dpi / 72.0) + 1))
    # Regions are in display space; text of a page with /Rotate is upright in unrotated space.
    matrix = (page.derotation_matrix if page.rotation else pymupdf.Identity) * pymupdf.Matrix(zoom, zoom)
    color = any(c for _, _, c in boxes)
    pix = page.get_pixmap(matrix=matrix, clip=union + (-REGION_PAD_PT, -REGION_PAD_PT, REGION_PAD_PT, REGION_PAD_PT),
                          colorspace=pymupdf.csRGB if color else pymupdf.csGRAY, alpha=False)
    image = Image.frombytes("RGB" if color else "L", (pix.width, pix.height), pix.samples)
    to_pixels = matrix * pymupdf.Matrix(1, 0, 0, 1, -pix.x, -pix.y)
    for i, rect, is_color in boxes:
        pad = 0.0 if is_color else REGION_PAD_PT  # figures are cut exactly, text with a margin
        box = (rect + (-pad, -pad, pad, pad)) * to_pixels
        crop = (max(0, math.floor(box.x0)), max(0, math.floor(box.y0)),
                min(image.width, math.ceil(box.x1)), min(image.height, math.ceil(box.y1)))
        if crop[2] - crop[0] < 1 or crop[3] - crop[1] < 1:
            continue
        img = image.crop(crop)
        if not is_color and img.mode != "L":
            img = img.convert("L")
        if max(img.size) > max_px:
            img.thumbnail((max_px, max_px), Image.LANCZOS)
        out[i] = img
