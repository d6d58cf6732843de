"""Why a file of another format cannot be taken or converted: a PDFError, so every caller handles both alike."""
from __future__ import annotations

from docenrich.pdf.errors import PDFError

# FormatError.code -> HTTP status for an upload refused on these grounds.
STATUS = {"unsupported": 415, "not_pdf": 415, "no_converter": 415, "too_large": 413, "too_many_pages": 413, "bomb": 413,
          "encrypted": 422, "corrupt": 422, "timeout": 422, "failed": 422, "empty": 422}


class FormatError(PDFError):
    """A non-PDF file that cannot be processed; `code` is machine-readable, `message` is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)

    @property
    def status(self) -> int:
        """The HTTP status an upload refused for this reason gets."""
        return STATUS.get(self.code, 422)

    def __reduce__(self):
        # Keeps the class and code when the error crosses a Celery (pickle) boundary.
        return (FormatError, (self.code, self.message))
