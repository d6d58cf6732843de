"""The real sample files of every supported format (tests/data/formats, see SOURCE.md there) and the
hostile files built from them: a zip bomb, a declared-huge EPUB entry, deep HTML, huge Markdown."""
from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.env import ROOT

FORMATS_DIR = ROOT / "tests" / "data" / "formats"


@dataclass(frozen=True)
class Sample:
    """One sample file: its name, its format and a phrase its text holds (OCR'd for pictures)."""

    name: str
    kind: str
    phrase: str

    @property
    def path(self) -> Path:
        return FORMATS_DIR / self.name

    def read(self) -> bytes:
        return self.path.read_bytes()


SAMPLES = (
    Sample("live-manual.epub", "epub", "live-build"),
    Sample("google-doc-document.xps", "xps", "Readability counts"),
    Sample("fbreader-minihelp.fb2", "fb2", "FBReader supports several e-book formats"),
    Sample("fbreader-minihelp.mobi", "mobi", "FBReader supports several e-book formats"),
    Sample("typewriter.cbz", "cbz", "Linzensoep"),
    Sample("rust-book-trpl04-01.svg", "svg", "capacity"),
    Sample("linn-sequencer.png", "png", "LinnSequencer"),
    Sample("baiona.jpg", "jpeg", "Milafranga"),
    Sample("kofax-test-image.tif", "tiff", "Kofax test print"),
    Sample("zlib-usage-example.html", "html", "Without further adieu"),
    Sample("systemd-distro-porting.md", "markdown", "NTP Pool"),
    Sample("dpkg-rootless-builds.txt", "text", "Rules-Requires-Root"),
    Sample("python-docx-font-props.docx", "docx", "Double Underlined"),
    Sample("python-pptx-test-slides.pptx", "pptx", "Group test text"),
    Sample("tablib-founders.xlsx", "xlsx", "George Washington"),
    Sample("odfpy-serious-poem.odt", "odt", "burning deck"),
    Sample("odfpy-cols.odp", "odp", "Suspendisse tempor"),
    Sample("odfpy-pythagoras.ods", "ods", "Sheet1"),
)
BY_KIND = {s.kind: s for s in SAMPLES}
OFFICE_KINDS = frozenset({"docx", "pptx", "xlsx", "odt", "odp", "ods"})
MB = 1024 * 1024


def _rezip(source: bytes, extra: dict[str, bytes] | None = None, replace: dict[str, bytes] | None = None) -> bytes:
    """A copy of a ZIP container with entries replaced and added (deflated, the mimetype entry first)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = (replace or {}).get(info.filename, src.read(info))
            dst.writestr(info, data, compress_type=info.compress_type)
        for name, data in (extra or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


def zip_bomb_docx(unpacked_mb: int = 64) -> bytes:
    """The sample DOCX with a part of zeros that deflates a thousandfold."""
    return _rezip(BY_KIND["docx"].read(), {"word/media/image1.bin": bytes(unpacked_mb * MB)})


def epub_declaring_a_gigabyte() -> bytes:
    """The sample EPUB with one more chapter that says it unpacks to 1 GB (it holds 11 bytes)."""
    name = "EPUB/huge-chapter.xhtml"
    data = bytearray(_rezip(BY_KIND["epub"].read(), {name: b"<p>tiny</p>"}))
    size = struct.pack("<I", 1024 * MB)
    encoded = name.encode()
    # The added entry's local header holds its uncompressed size at offset 22, its central record at 24.
    local = max(i for i in _find_all(data, b"PK\x03\x04") if data[i + 30: i + 30 + len(encoded)] == encoded)
    data[local + 22: local + 26] = size
    central = max(i for i in _find_all(data, b"PK\x01\x02") if data[i + 46: i + 46 + len(encoded)] == encoded)
    data[central + 24: central + 28] = size
    return bytes(data)


def _find_all(data: bytes | bytearray, needle: bytes) -> list[int]:
    found, start = [], 0
    while (at := data.find(needle, start)) >= 0:
        found.append(at)
        start = at + 1
    return found


def nested_html(depth: int = 100_000) -> bytes:
    """HTML of `depth` nested elements around one sentence."""
    return (b"<!doctype html><html><body><h1>Deep nesting</h1>" + b"<div>" * depth
            + b"The innermost sentence of the deeply nested page." + b"</div>" * depth + b"</body></html>")


def huge_markdown(megabytes: int = 50) -> bytes:
    """Markdown of about `megabytes` MB: a heading and the same paragraph again and again."""
    paragraph = b"Frost protection for seedlings needs fleece covers and watering before a cold night.\n\n"
    return b"# A very long note\n\n" + paragraph * (megabytes * MB // len(paragraph))


def encrypted_ooxml() -> bytes:
    """The start of an OLE compound file holding an encrypted OOXML package (its directory names the streams)."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    directory = "EncryptionInfo".encode("utf-16-le") + bytes(50) + "EncryptedPackage".encode("utf-16-le")
    return header + directory + bytes(4096)


def encrypted_odt() -> bytes:
    """The sample ODT whose manifest says its content is encrypted with a password."""
    source = BY_KIND["odt"].read()
    with zipfile.ZipFile(io.BytesIO(source)) as src:
        manifest = src.read("META-INF/manifest.xml").decode()
    entry = ('<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">'
             '<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="x">'
             '<manifest:algorithm manifest:algorithm-name="Blowfish CFB" manifest:initialisation-vector="x"/>'
             '</manifest:encryption-data></manifest:file-entry>')
    manifest = manifest.replace("</manifest:manifest>", entry + "</manifest:manifest>")
    return _rezip(source, replace={"META-INF/manifest.xml": manifest.encode()})
