"""Storage errors, the dense-search protocol, and the name rules the backends share."""
from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from docenrich.records import DEFAULT_COLLECTION

if TYPE_CHECKING:
    import numpy as np


# Letters, digits, spaces and - _ . ; starting with a letter or digit; at most 64 characters.
NAME_PATTERN = re.compile(r"[^\W_][\w .\-]{0,63}")
MAX_FILENAME = 200
DEFAULT_FILENAME = "document.pdf"


class StorageError(RuntimeError):
    """Saving to disk or the database failed; the message is meant for a person."""


class TransientStorageError(StorageError):
    """The database was busy, locked, restarting or briefly unreachable: worth another try."""


class QueueFull(RuntimeError):
    """Admitting one more document would exceed the cap on documents waiting to be processed."""

    def __init__(self, waiting: int):
        super().__init__(f"{waiting} documents are already waiting to be processed")
        self.waiting = waiting


class DimensionMismatch(ValueError):
    """An embedder name was reused with a different vector dimension."""


class VectorSearch(Protocol):
    """What search needs of a dense index: refresh, top-k by similarity, and its size."""

    def refresh(self) -> None:
        ...

    def search(
        self, query: np.ndarray, k: int, document_id: str | None = None, document_ids: Iterable[str] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) best first, optionally within one document or a set of them."""
        ...

    def __len__(self) -> int:
        ...


def default_collections(names: Iterable[str] | None) -> list[str]:
    """The collections an upload goes into: those named, else the default one."""
    names = [n for n in (names or []) if n]
    return names or [DEFAULT_COLLECTION]


def check_collection_name(name: object) -> str:
    """The name, trimmed, if it is a valid collection name; ValueError saying why otherwise."""
    text = str(name or "").strip()
    if not NAME_PATTERN.fullmatch(text):
        raise ValueError(
            "A collection name has 1 to 64 characters: letters, digits, spaces, '-', '_' or '.', "
            "starting with a letter or digit."
        )
    return text


def sanitize_filename(name: Any) -> str:
    """A display-safe version of an uploaded filename (never use it as a path)."""
    text = unicodedata.normalize("NFC", str(name or ""))
    # Browsers (old IE, some clients) send full client paths; the last part is the name.
    text = re.split(r"[\\/]", text)[-1]
    # Cc: control chars; Cf: invisible format chars such as RTL overrides used to spoof
    # extensions; Cs: lone surrogates from undecodable bytes. Whitespace (tabs, newlines)
    # becomes a plain space instead so words stay apart.
    text = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
    )
    text = re.sub(r"\s+", " ", text).strip()
    if not text.strip("."):
        return DEFAULT_FILENAME
    if len(text) > MAX_FILENAME:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            text = stem[: MAX_FILENAME - len(ext) - 1].rstrip() + "." + ext
        else:
            text = text[:MAX_FILENAME].rstrip()
    return text


def reason(exc: OSError) -> str:
    """Short human wording for an error of the file system (database errors: engine.failure)."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the data directory is not writable"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: making a folder where a file is
        return "a path in the data directory is a file where a folder was expected"
    return os.strerror(exc.errno).lower() if exc.errno is not None else str(exc) or type(exc).__name__
