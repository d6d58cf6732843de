"""Admitting an upload: the checks every file passes before any work is queued, then store and queue.

The web API and the command line both admit files here, so a file refused by one is refused by
the other for the same reason, in the same words.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from docenrich import client, formats, pdf
from docenrich.records import Document
from docenrich.storage import QueueFull

log = logging.getLogger(__name__)

# PDFError.code -> HTTP status; every other code (encrypted, corrupt, empty) is 422.
PDF_STATUS = {"not_pdf": 415, "too_many_pages": 413, "too_large": 413}
# Formats whose pages are pictures: their text comes from OCR.
IMAGES = frozenset({"png", "jpeg", "tiff", "cbz"})

# The kinds of file an upload may be, by extension (lower case, with the dot). The command line
# (`docenrich ingest` on folders, `docenrich sync`) picks files by this list: a new format adds
# its extension here and nowhere else.
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(formats.EXTENSIONS)


def accepted_extensions() -> tuple[str, ...]:
    """The file extensions an upload accepts, lower case with their dot."""
    return SUPPORTED_EXTENSIONS


class Refused(Exception):
    """An upload that is not accepted: an HTTP status, a sentence for a person and a short code."""

    def __init__(self, status: int, message: str, code: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.retry_after = status, message, code, retry_after


@dataclass(frozen=True)
class Limits:
    """What an upload may be: its size, its pages, how many documents may wait, and (other formats) the size
    of HTML, Markdown or text and what a ZIP container may unpack to."""

    max_mb: int
    max_pages: int
    max_queued: int
    batch_pages: int | None = None
    max_text_mb: int = 10
    max_unzipped_mb: int = 512

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb) * 1024 * 1024

    @classmethod
    def from_config(cls, config) -> Limits:
        """The limits of a Flask config (or any mapping with the same keys)."""
        return cls(int(config["MAX_UPLOAD_MB"]), int(config["MAX_PAGES"]), int(config["MAX_QUEUED_DOCUMENTS"]),
                   int(config["SNIPPET_BATCH_PAGES"]), int(config.get("MAX_TEXT_MB", 10)),
                   int(config.get("MAX_UNZIPPED_MB", 512)))


def check(data: bytes, name: str, limits: Limits) -> pdf.DocumentInfo:
    """The file's info if it may be processed; Refused saying why otherwise.

    A PDF is inspected; a file of another format passes the quick checks of `formats` and is
    converted (and its pages counted against the limit) by the docs worker.
    """
    if len(data) > limits.max_bytes:
        raise Refused(413, f"{name} is larger than the upload limit of {limits.max_mb} MB.", "too_large")
    if not data:
        raise Refused(422, f"{name} is empty.", "empty")
    try:
        fmt = formats.detect(data, name)
        if fmt.kind == "pdf":
            return pdf.inspect_pdf(data, max_bytes=limits.max_bytes, max_pages=limits.max_pages)
        formats.check_upload(data, fmt, max_text_bytes=limits.max_text_mb * 1024 * 1024,
                             zip_limits=formats.ZipLimits(max_unzipped=limits.max_unzipped_mb * 1024 * 1024))
    except formats.FormatError as exc:
        raise Refused(exc.status, f"{name}: {exc.message}", exc.code) from None
    except pdf.PDFError as exc:
        raise Refused(PDF_STATUS.get(exc.code, 422), f"{name}: {exc.message}", exc.code) from None
    # Its pages are known once the worker has converted it; the format travels in the metadata.
    return pdf.DocumentInfo(page_count=0, title="", producer="", has_text_layer=fmt.kind not in IMAGES,
                            metadata=formats.upload_metadata(fmt))


def admit(store, data: bytes, name: str, limits: Limits,
          collections: Iterable[str] | None = None) -> tuple[Document, bool, str | None]:
    """Check one file, store it (as it came) in its collections and queue it (once per distinct file).

    Returns (doc, created, the id of the task that processes it when it was queued now).
    """
    info = check(data, name, limits)
    # The store counts and inserts in one database transaction, so the cap holds however many
    # web processes (or command lines) admit uploads at once. The page batch size is fixed here.
    try:
        doc, created = store.add_document(data, name, info, collections=collections,
                                          batch_pages=limits.batch_pages, max_queued=limits.max_queued)
    except QueueFull as exc:
        raise Refused(429, f"{exc.waiting} documents are already waiting to be processed; try again in a minute.",
                      "queue_full", retry_after=60) from None
    except ValueError as exc:  # a bad collection name
        raise Refused(400, str(exc), "bad_collection") from None
    if not created:
        return doc, created, None
    try:
        task_id = client.submit_document(doc.id, doc.generation)
    except Exception:
        # Failed, not queued: otherwise a retried upload would find it "queued" and never run it.
        store.update_document(doc.id, state="failed", stage="failed", error="Could not be queued; upload it again.")
        raise
    log.info("queued document %s (%s)", doc.id, name)
    return doc, created, task_id
