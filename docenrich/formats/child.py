"""The converter process: `python -m docenrich.formats.child REQUEST.json`, bounded in memory and CPU.

It inflates ZIP containers with a running cap (whatever they declare), then converts with MuPDF
(formats it opens, or HTML laid out by its Story), writes the PDF where the request says and
prints one JSON line: {"pages", "title"} on success, {"code", "message"} with exit code 3 when the
file is refused. A crash or a kill costs this process only, never the worker that started it.
"""
from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

REFUSED = 3


def _limit(memory_mb: int, cpu_seconds: int) -> None:
    """Cap this process's address space and CPU time (0: no cap)."""
    if memory_mb > 0:
        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if cpu_seconds > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


def run(request: dict) -> dict:
    """Check and convert one file as the request says; the JSON-able answer."""
    from .errors import FormatError
    from .kinds import FORMATS, MUPDF, STORY
    from .paged import mupdf_pdf, story_pdf
    from .safety import ZipLimits, verify_zip

    fmt = FORMATS[request["kind"]]
    data = Path(request["input"]).read_bytes()
    try:
        if fmt.zipped:
            verify_zip(data, ZipLimits(**request.get("zip", {})))
        if fmt.converter not in (MUPDF, STORY):
            return {"pages": 0, "title": ""}  # checked only: LibreOffice converts it next
        convert = mupdf_pdf if fmt.converter == MUPDF else story_pdf
        paged = convert(data, fmt, int(request["max_pages"]))
    except FormatError as exc:
        return {"code": exc.code, "message": exc.message}
    except (MemoryError, RecursionError):
        return {"code": "failed", "message": f"Converting this {fmt.label} file needs more memory than a "
                                             f"conversion may use (CONVERT_MEMORY_MB)."}
    Path(request["output"]).write_bytes(paged.pdf)
    return {"pages": paged.pages, "title": paged.title}


def main(argv: list[str]) -> int:
    """Entry point: read the request, apply the limits, convert, answer on stdout."""
    request = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    _limit(int(request.get("memory_mb", 0)), int(request.get("cpu_seconds", 0)))
    answer = run(request)
    sys.stdout.write(json.dumps(answer) + "\n")  # the one line the parent reads
    return REFUSED if "code" in answer else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
