"""What can go wrong with a PDF: the error callers see, and the errors a damaged page raises."""
from __future__ import annotations

import pymupdf
from PIL import Image

# What a damaged page, its fonts or its images can raise. Anything else (a task's soft time
# limit, an interrupt) must reach the caller instead of turning the page into an image.
PAGE_ERRORS: tuple[type[BaseException], ...] = (
    pymupdf.mupdf.FzErrorBase, RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError,
    OSError, ArithmeticError, Image.DecompressionBombError,
)

# MuPDF prints repair warnings to stderr; failures still surface as exceptions and we
# report them as PDFError, so the console noise only hides real log lines.
pymupdf.TOOLS.mupdf_display_warnings(False)


class PDFError(ValueError):
    """A PDF that cannot be processed; `code` is machine-readable, `message` is for people."""

    MESSAGES = {
        "not_pdf": "This file is not a PDF; upload a PDF document.",
        "corrupt": "This PDF is damaged or incomplete and cannot be read; export or download it again.",
        "encrypted": "This PDF is password-protected; remove the password and upload it again.",
        "empty": "This PDF has no pages.",
        "too_large": "This PDF is too large.",
        "too_many_pages": "This PDF has too many pages.",
    }

    def __init__(self, code: str, message: str | None = None):
        self.code = code
        self.message = message or self.MESSAGES.get(code, "This PDF cannot be processed.")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        # Keeps the code when the error crosses a Celery (pickle) boundary.
        return (PDFError, (self.code, self.message))
