"""A file of another format into its PDF rendering, in bounded subprocesses (see `child` and `office`)."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .bounded import run_bounded
from .errors import FormatError
from .kinds import OFFICE, Format
from .office import office_pdf
from .paged import Paged
from .safety import DEFAULT_LIMITS, ZipLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """What one conversion may take: seconds, pages, memory (MB, 0: no cap) and what a ZIP may unpack to."""

    timeout: float = 90.0
    max_pages: int = 10000
    memory_mb: int = 2048
    zip_limits: ZipLimits = DEFAULT_LIMITS

    @classmethod
    def from_settings(cls, settings) -> Budget:
        """The budget the settings give (CONVERT_TIMEOUT, MAX_PAGES, CONVERT_MEMORY_MB, MAX_UNZIPPED_MB)."""
        return cls(float(settings.convert_timeout), int(settings.max_pages), int(settings.convert_memory_mb),
                   ZipLimits(max_unzipped=int(settings.max_unzipped_mb) * 1024 * 1024))


def _answer(output: str) -> dict | None:
    """The child's JSON answer: the last line of its output that is one."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _in_child(data: bytes, fmt: Format, budget: Budget, folder: Path, timeout: float) -> Paged:
    """Run the converter process on one file; its PDF, or FormatError saying why not."""
    source, target, request = folder / "input", folder / "output.pdf", folder / "request.json"
    source.write_bytes(data)
    request.write_text(json.dumps({
        "kind": fmt.kind, "input": str(source), "output": str(target), "max_pages": budget.max_pages,
        "memory_mb": budget.memory_mb, "cpu_seconds": int(timeout) + 1,
        "zip": dataclasses.asdict(budget.zip_limits),
    }), encoding="utf-8")
    returncode, output = run_bounded([sys.executable, "-m", "docenrich.formats.child", str(request)], timeout,
                                     cwd=str(folder), what=f"Converting this {fmt.label} file")
    answer = _answer(output)
    if answer is not None and "code" in answer:
        raise FormatError(answer["code"], answer["message"])
    if returncode != 0 or answer is None or (fmt.converter != OFFICE and not target.is_file()):
        log.warning("converter of a %s file ended with %s: %s", fmt.kind, returncode, output[-1000:])
        if returncode is not None and returncode < 0:
            raise FormatError("failed", f"The converter stopped on this {fmt.label} file (it ran out of memory "
                                        f"or time, or the file is malformed); it cannot be processed.")
        raise FormatError("failed", f"This {fmt.label} file could not be converted; it may be damaged.")
    return Paged(target.read_bytes() if fmt.converter != OFFICE else b"", int(answer["pages"]), answer["title"])


def to_pdf(data: bytes, fmt: Format, budget: Budget | None = None) -> Paged:
    """The PDF rendering of a file (any supported format but PDF), within the budget (default: Budget())."""
    from docenrich.pdf import PDFError, page_count

    budget = budget or Budget()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="docenrich-convert-") as tmp:
        paged = _in_child(data, fmt, budget, Path(tmp), budget.timeout)
    if fmt.converter != OFFICE:
        return paged
    left = budget.timeout - (time.monotonic() - started)
    pdf = office_pdf(data, fmt, max(5.0, left))
    try:
        pages = page_count(pdf)
    except PDFError as exc:
        raise FormatError("failed", f"LibreOffice made an unreadable PDF of this {fmt.label} file.") from exc
    if pages > budget.max_pages:
        raise FormatError("too_many_pages", f"This {fmt.label} file makes {pages} pages; the limit is "
                                            f"{budget.max_pages}.")
    log.info("converted a %s file to %d pages in %.1f s", fmt.kind, pages, time.monotonic() - started)
    return Paged(pdf, pages, "")
