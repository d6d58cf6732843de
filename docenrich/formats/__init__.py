"""Every document people have, as paged documents: formats recognised, checked, and converted to PDF.

A non-PDF upload is checked here in the web process (quick checks on its bytes and what its
ZIP container declares), stored as it came, and converted by the docs worker into the PDF
rendering that pages, bounding boxes, region images and the cited-page view are drawn from.
"""
from __future__ import annotations

from .convert import Budget, to_pdf
from .errors import FormatError
from .kinds import EXTENSIONS, FORMATS, NATIVE, OFFICE, Format, detect, supported_names
from .office import missing_message, soffice
from .paged import Paged
from .safety import (
    DEFAULT_LIMITS,
    ZipLimits,
    check_encryption,
    check_image,
    check_markup,
    check_text_size,
    check_zip,
)

__all__ = [
    "EXTENSIONS", "FORMATS", "SOURCE_FORMAT", "Budget", "Format", "FormatError", "Paged", "ZipLimits",
    "check_upload", "detect", "media_type", "source_format", "supported_names", "to_pdf",
]

# The metadata keys a document uploaded in another format carries: its format and media type.
SOURCE_FORMAT = "source_format"
MEDIA_TYPE = "media_type"


def upload_metadata(fmt: Format) -> dict:
    """What a document's metadata records of the format it was uploaded in."""
    return {SOURCE_FORMAT: fmt.kind, MEDIA_TYPE: fmt.media_type}


def source_format(metadata: dict | None) -> Format | None:
    """The format a document was uploaded in, from its metadata, when it is not PDF."""
    kind = (metadata or {}).get(SOURCE_FORMAT)
    found = FORMATS.get(kind) if isinstance(kind, str) else None
    return found if found is not None and found.converter != NATIVE else None


def media_type(metadata: dict | None) -> str:
    """The media type of the file a document was uploaded as."""
    return str((metadata or {}).get(MEDIA_TYPE) or "application/pdf")


def check_upload(data: bytes, fmt: Format, *, max_text_bytes: int, zip_limits: ZipLimits = DEFAULT_LIMITS) -> None:
    """The checks a non-PDF upload passes before it is stored; FormatError saying why it is refused."""
    if fmt.converter == NATIVE:
        return
    if fmt.zipped:
        check_zip(data, zip_limits)
        check_encryption(data, fmt)
    check_markup(data, fmt)
    check_image(data, fmt)
    check_text_size(data, fmt, max_text_bytes)
    if fmt.converter == OFFICE and soffice() is None:
        raise FormatError("no_converter", missing_message(fmt))
