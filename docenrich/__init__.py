"""docenrich: PDFs to searchable, enriched snippets."""
import sys

# PyMuPDF 2 imports its layout and pymupdf4llm packages on `import pymupdf`: they import
# onnxruntime, and the layout package starts an onnxruntime session. A process that forks (a worker's parent, gunicorn's master) must not hold
# onnxruntime's threads and locks: a forked child then waits forever on a lock that a thread of
# the parent held. The layout model is imported on demand in the process that runs it
# (docenrich.pdf.tables), which is a pool child.
DEFERRED_MODULES = ("pymupdf.layout", "pymupdf4llm")
if "pymupdf" not in sys.modules:
    for _name in DEFERRED_MODULES:
        sys.modules.setdefault(_name, None)  # type: ignore[arg-type]
