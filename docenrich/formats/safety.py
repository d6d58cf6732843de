"""Checks a file passes before anything converts it: zip bombs, encryption, entity tricks, text size.

The upload runs the quick ones on what the archive declares; the converter runs `verify_zip`,
which inflates every entry with a running cap, because declared sizes can lie.
"""
from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass

from .errors import FormatError
from .kinds import Format

MB = 1024 * 1024
# An image page of more pixels than this (a 14,000 px square) is refused before MuPDF decodes it.
MAX_IMAGE_PIXELS = 200_000_000
# Font obfuscation in EPUB names its fonts in encryption.xml without locking the book.
_FONT_OBFUSCATION = ("http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC")
_ALGORITHM = re.compile(rb'Algorithm\s*=\s*["\']([^"\']+)["\']')


@dataclass(frozen=True)
class ZipLimits:
    """What a ZIP container may unpack to: entries, total bytes, and the ratio to its packed size."""

    max_entries: int = 10_000
    max_unzipped: int = 512 * MB
    max_ratio: float = 100.0
    # Small archives may be very compressible (an empty spreadsheet): the ratio counts past this size.
    ratio_floor: int = 32 * MB


DEFAULT_LIMITS = ZipLimits()


def _bomb(message: str) -> FormatError:
    return FormatError("bomb", f"{message} It looks like a decompression bomb, so it is not opened.")


def check_zip(data: bytes, limits: ZipLimits = DEFAULT_LIMITS) -> None:
    """Refuse an archive whose declared entries, unpacked size or compression ratio exceed the limits."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise FormatError("corrupt", "This ZIP-based file is damaged or incomplete and cannot be read.") from exc
    if len(infos) > limits.max_entries:
        raise _bomb(f"This file holds {len(infos):,} parts; the limit is {limits.max_entries:,}.")
    total = sum(i.file_size for i in infos)
    if total > limits.max_unzipped:
        raise _bomb(f"This file unpacks to {total / MB:,.0f} MB; the limit is {limits.max_unzipped / MB:,.0f} MB.")
    packed = max(1, sum(i.compress_size for i in infos))
    if total > limits.ratio_floor and total / packed > limits.max_ratio:
        raise _bomb(f"This file unpacks {total / packed:,.0f} times its size; the limit is {limits.max_ratio:g}.")


def verify_zip(data: bytes, limits: ZipLimits = DEFAULT_LIMITS) -> None:
    """Inflate every entry, counting, and stop at the limit whatever the archive declares."""
    check_zip(data, limits)
    archive = zipfile.ZipFile(io.BytesIO(data))
    total = 0
    for info in archive.infolist():
        try:
            # zipfile stops at the declared size and checks the CRC: an entry that inflates to more
            # than it declares is refused as damaged, never read on.
            with archive.open(info) as entry:
                while chunk := entry.read(1 << 20):
                    total += len(chunk)
                    if total > limits.max_unzipped:
                        raise _bomb(f"This file unpacks to more than {limits.max_unzipped / MB:,.0f} MB.")
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise FormatError("corrupt", f"Part {info.filename!r} of this file is damaged or locked "
                                         f"and cannot be read.") from exc


def _small_entry(archive: zipfile.ZipFile, name: str, limit: int = MB) -> bytes | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limit:
        raise _bomb(f"Its {name} is {info.file_size / MB:,.1f} MB.")
    return archive.read(info)


def check_encryption(data: bytes, fmt: Format) -> None:
    """Refuse password-protected ODF files and DRM-locked EPUBs (OOXML ones are caught by `detect`)."""
    if fmt.kind not in ("odt", "odp", "ods", "epub"):
        return
    archive = zipfile.ZipFile(io.BytesIO(data))
    if fmt.kind == "epub":
        found = _small_entry(archive, "META-INF/encryption.xml")
        locked = [a for a in _ALGORITHM.findall(found or b"") if a.decode(errors="replace") not in _FONT_OBFUSCATION
                  and b"xmldsig" not in a]
        if locked:
            raise FormatError("encrypted", "This EPUB is locked with DRM and cannot be read; "
                                           "upload a copy without DRM.")
        return
    manifest = _small_entry(archive, "META-INF/manifest.xml") or b""
    if b"encryption-data" in manifest:
        raise FormatError("encrypted", f"This {fmt.label} file is password-protected; save it without "
                                       f"a password and upload it again.")


def check_markup(data: bytes, fmt: Format) -> None:
    """Refuse XML formats that declare entities: MuPDF's parser needs none, and expanding them is an attack."""
    if fmt.kind in ("svg", "fb2") and re.search(rb"<!ENTITY", data[: 64 * 1024], re.IGNORECASE):
        raise FormatError("unsupported", f"This {fmt.label} file declares XML entities, which are not accepted.")


def check_text_size(data: bytes, fmt: Format, max_bytes: int) -> None:
    """Refuse HTML, Markdown or text larger than what is laid out into pages in reasonable time."""
    if fmt.kind in ("html", "markdown", "text") and len(data) > max_bytes:
        raise FormatError("too_large", f"This {fmt.label} file is {len(data) / MB:,.1f} MB; {fmt.label} files "
                                       f"are laid out into pages, and the limit for them is "
                                       f"{max_bytes / MB:,.0f} MB (MAX_TEXT_MB).")


def check_image(data: bytes, fmt: Format) -> None:
    """Refuse an image whose header is unreadable or names more pixels than MAX_IMAGE_PIXELS."""
    if fmt.kind not in ("png", "jpeg", "tiff"):
        return
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except Image.DecompressionBombError:
        width, height = MAX_IMAGE_PIXELS, 2
    except Exception as exc:  # Pillow raises several types for unreadable headers
        raise FormatError("corrupt", f"This {fmt.label} is damaged and cannot be read.") from exc
    if width * height > MAX_IMAGE_PIXELS:
        raise _bomb(f"This {fmt.label} has {width * height / 1e6:,.0f} million pixels; the limit is "
                    f"{MAX_IMAGE_PIXELS / 1e6:,.0f} million.")
