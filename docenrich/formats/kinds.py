"""What an uploaded file is: recognised by its bytes first, by its name only for plain-text formats."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from docenrich.pdf.errors import PDFError

from .errors import FormatError

# How a format becomes the PDF that pages, boxes and region images are drawn from.
NATIVE = "pdf"        # it is a PDF already
MUPDF = "mupdf"       # MuPDF opens it: Document.convert_to_pdf
STORY = "story"       # laid out into pages by MuPDF's Story (HTML, Markdown, plain text)
OFFICE = "office"     # LibreOffice, headless, in a subprocess

CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class Format:
    """One supported format: its short name, media type, how it converts and what people call it."""

    kind: str
    media_type: str
    converter: str
    label: str

    @property
    def zipped(self) -> bool:
        """Whether the file is a ZIP container (checked for bombs before any conversion)."""
        return self.kind in ZIPPED


FORMATS = {f.kind: f for f in (
    Format("pdf", "application/pdf", NATIVE, "PDF"),
    Format("epub", "application/epub+zip", MUPDF, "EPUB"),
    Format("xps", "application/oxps", MUPDF, "XPS"),
    Format("fb2", "application/x-fictionbook+xml", MUPDF, "FictionBook"),
    Format("mobi", "application/x-mobipocket-ebook", MUPDF, "MOBI"),
    Format("cbz", "application/vnd.comicbook+zip", MUPDF, "comic book (CBZ)"),
    Format("svg", "image/svg+xml", MUPDF, "SVG"),
    Format("png", "image/png", MUPDF, "PNG image"),
    Format("jpeg", "image/jpeg", MUPDF, "JPEG image"),
    Format("tiff", "image/tiff", MUPDF, "TIFF image"),
    Format("html", "text/html", STORY, "HTML"),
    Format("markdown", "text/markdown", STORY, "Markdown"),
    Format("text", "text/plain", STORY, "plain text"),
    Format("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", OFFICE, "Word (DOCX)"),
    Format("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", OFFICE,
           "PowerPoint (PPTX)"),
    Format("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", OFFICE, "Excel (XLSX)"),
    Format("odt", "application/vnd.oasis.opendocument.text", OFFICE, "OpenDocument text (ODT)"),
    Format("odp", "application/vnd.oasis.opendocument.presentation", OFFICE, "OpenDocument presentation (ODP)"),
    Format("ods", "application/vnd.oasis.opendocument.spreadsheet", OFFICE, "OpenDocument spreadsheet (ODS)"),
)}
ZIPPED = frozenset({"epub", "xps", "cbz", "docx", "pptx", "xlsx", "odt", "odp", "ods"})

# File name endings people and the command line pick files by (every supported format).
EXTENSIONS = {
    ".pdf": "pdf", ".epub": "epub", ".xps": "xps", ".oxps": "xps", ".fb2": "fb2", ".mobi": "mobi", ".cbz": "cbz",
    ".svg": "svg", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
    ".html": "html", ".htm": "html", ".xhtml": "html", ".md": "markdown", ".markdown": "markdown",
    ".txt": "text", ".text": "text", ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx", ".odt": "odt",
    ".odp": "odp", ".ods": "ods",
}
_ODF_TYPES = {"application/vnd.oasis.opendocument.text": "odt",
              "application/vnd.oasis.opendocument.presentation": "odp",
              "application/vnd.oasis.opendocument.spreadsheet": "ods",
              "application/epub+zip": "epub"}
_OOXML_PARTS = (("word/document.xml", "docx"), ("ppt/presentation.xml", "pptx"), ("xl/workbook.xml", "xlsx"))
_IMAGE_NAMES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".jxr")
# Legacy binary Office files (a CFB container) name their main stream in UTF-16.
_LEGACY = {"WordDocument": ".docx", "Workbook": ".xlsx", "Book": ".xlsx", "PowerPoint Document": ".pptx"}


def supported_names() -> str:
    """The formats accepted, for messages to people."""
    return "PDF, DOCX, PPTX, XLSX, ODT, ODP, ODS, EPUB, XPS, FB2, MOBI, CBZ, SVG, PNG, JPEG, TIFF, HTML, Markdown and text"


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _unsupported(what: str = "") -> FormatError:
    kind = f" ({what})" if what else ""
    return FormatError("unsupported", f"This file type{kind} is not supported; upload one of: {supported_names()}.")


def _text_head(data: bytes) -> str | None:
    """The first KB as text, or None when the bytes are not text (a NUL, or not UTF-8/UTF-16)."""
    head = data[:4096]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")[:1024]
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="replace")
    return None if text.count("\ufffd") > 8 else text[:2048]


def _in_cfb(data: bytes) -> FormatError:
    """A CFB (OLE) container: an encrypted OOXML file, or a legacy binary Office file."""
    if "EncryptedPackage".encode("utf-16-le") in data[:1 << 20] or "EncryptionInfo".encode("utf-16-le") in data[:1 << 20]:
        return FormatError("encrypted", "This Office file is password-protected; remove the password "
                                        "(save it without one) and upload it again.")
    for stream, modern in _LEGACY.items():
        if stream.encode("utf-16-le") in data[:1 << 20]:
            return FormatError("unsupported", f"This is a legacy binary Office file; save it as {modern} "
                                              f"and upload that.")
    return _unsupported("an OLE compound file")


def _in_zip(data: bytes, ext: str) -> Format:
    """Which ZIP-based format the archive holds (its mimetype entry or its parts decide)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise FormatError("corrupt", "This ZIP-based file is damaged or incomplete and cannot be read.") from exc
    listed = set(names)
    if "mimetype" in listed:
        info = archive.getinfo("mimetype")
        if info.file_size <= 200:
            mimetype = archive.read("mimetype").decode("ascii", errors="replace").strip()
            if mimetype in _ODF_TYPES:
                return FORMATS[_ODF_TYPES[mimetype]]
    if "[Content_Types].xml" in listed:
        for part, kind in _OOXML_PARTS:
            if part in listed:
                return FORMATS[kind]
    if any(n.lower().endswith(".fdseq") for n in names):
        return FORMATS["xps"]
    files = [n for n in names if not n.endswith("/") and n.rsplit("/", 1)[-1].lower() != "comicinfo.xml"]
    if files and (ext == ".cbz" or all(n.lower().endswith(_IMAGE_NAMES) for n in files)):
        return FORMATS["cbz"]
    raise _unsupported("a ZIP archive")


def _by_text(head: str, ext: str) -> Format | None:
    """A text format by its content (SVG, FictionBook, HTML), then by its name (Markdown, text)."""
    low = head.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in low[:2048] and (low.startswith(("<?xml", "<svg", "<!--", "<!doctype svg")) or ext == ".svg"):
        return FORMATS["svg"]
    if "<fictionbook" in low[:2048]:
        return FORMATS["fb2"]
    if ext in (".md", ".markdown"):
        return FORMATS["markdown"]
    if ext in (".txt", ".text"):
        return FORMATS["text"]
    if low.startswith(("<!doctype html", "<html")) or ext in (".html", ".htm", ".xhtml"):
        return FORMATS["html"]
    return None


def detect(data: bytes, name: str) -> Format:
    """The file's format; FormatError (unsupported, encrypted, corrupt, not_pdf) when it cannot be taken.

    The bytes decide; but a file named .pdf must be a PDF (a picture or archive saved under a PDF's
    name is a mistake to point out, not a document to guess at).
    """
    ext = _extension(name)
    try:
        found = _detect(data, ext)
    except FormatError:
        if ext == ".pdf":
            raise _not_pdf() from None
        raise
    if ext == ".pdf" and found.kind != "pdf":
        raise _not_pdf()
    return found


def _not_pdf() -> FormatError:
    return FormatError("not_pdf", PDFError.MESSAGES["not_pdf"])


def _detect(data: bytes, ext: str) -> Format:
    """The format the bytes show (the name's extension decides only between text formats)."""
    head = data[:1024]
    if head.startswith(ZIP_MAGIC):
        return _in_zip(data, ext)
    if head.startswith(CFB_MAGIC):
        raise _in_cfb(data)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return FORMATS["png"]
    if head.startswith(b"\xff\xd8\xff"):
        return FORMATS["jpeg"]
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return FORMATS["tiff"]
    if data[60:68] == b"BOOKMOBI":
        return FORMATS["mobi"]
    if b"%PDF-" in head:
        return FORMATS["pdf"]
    text = _text_head(data)
    found = _by_text(text, ext) if text is not None else None
    if found is None:
        raise _unsupported(ext.lstrip(".").upper() if ext else "")
    return found
