"""Decompression bombs in a document worker of their own (no model: extraction is where bombs go
off), so its peak RSS (VmHWM) belongs to the bomb alone: memory stays bounded and the worker up."""
from __future__ import annotations

import threading
import time

import pytest

from tests.helpers.pdfs import bomb_pdf

pytestmark = pytest.mark.slow

GIB = 1 << 30


class PeakMemory:
    """Samples VmHWM (peak RSS) of a worker's processes while work runs."""

    def __init__(self, worker):
        self.worker = worker
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def vm_hwm_kb(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self) -> int:
        pids = [self.worker.process.pid, *self.worker.child_pids()]
        self.peak_kb = max([self.peak_kb, *(self.vm_hwm_kb(p) for p in pids)])
        return self.peak_kb

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.1)  # the sampling interval

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def extract_directly(stack, data: bytes, name: str, timeout: float = 120) -> dict:
    """Store a PDF and run its (only) page batch in the document worker; returns the task result."""
    from docenrich.pdf import inspect_pdf

    doc, _ = stack.store.add_document(data, name, inspect_pdf(data))
    stack.store.begin_batches(doc.id, 1)
    return stack.app.send_task("docenrich.extract_pages", args=[doc.id, 0], queue="docs",
                                ignore_result=False).get(timeout=timeout)


@pytest.fixture(scope="module")
def bomb_stack(tmp_path_factory):
    """A document-only worker (no model: extraction is where bombs go off) on its own Redis."""
    from tests.stack import Stack

    stack = Stack(tmp_path_factory.mktemp("bombs"))
    try:
        worker = stack.worker("bombs", "docs", MAX_TASKS_PER_CHILD="1000")
        yield stack, worker
    finally:
        stack.close()


def test_content_stream_bomb_keeps_memory_bounded(bomb_stack):
    stack, worker = bomb_stack
    data = bomb_pdf("content", 1024)  # 1 GiB of zeros as a content stream, ~1 MB on disk
    assert len(data) < 2 << 20
    with PeakMemory(worker) as memory:
        started = time.monotonic()
        result = extract_directly(stack, data, "content-bomb.pdf")
        took = time.monotonic() - started
    print(f"content-stream bomb ({len(data) / 1e6:.1f} MB -> 1 GiB): {result}, {took:.1f}s, "
          f"worker peak RSS {memory.peak_kb / 1024:.0f} MiB")
    assert result.get("snippets", 0) >= 1
    assert memory.peak_kb * 1024 < 1 * GIB, f"peak RSS {memory.peak_kb / 1024:.0f} MiB"
    assert stack.app.control.ping(destination=[worker.hostname], timeout=5)


def test_image_bomb_memory_does_not_grow_with_declared_pixels(bomb_stack):
    stack, worker = bomb_stack
    data = bomb_pdf("image", 1024)  # a 32768 x 32768 gray image of zeros (1 GiB of pixels), ~1 MB on disk
    with PeakMemory(worker) as memory:
        before = memory.sample()
        started = time.monotonic()
        result = extract_directly(stack, data, "image-bomb.pdf")
        took = time.monotonic() - started
    grew = (memory.peak_kb - before) * 1024
    print(f"image bomb ({len(data) / 1e6:.2f} MB -> 1 GiB of pixels): {result}, {took:.1f}s, peak RSS "
          f"{memory.peak_kb / 1024:.0f} MiB (+{grew / 2**20:.0f} MiB)")
    assert result.get("snippets", 0) >= 1
    assert stack.app.control.ping(destination=[worker.hostname], timeout=5), "the worker stays up"
    assert memory.peak_kb * 1024 < 3 * GIB
    assert grew < 256 << 20, f"extraction grew the worker by {grew / 2**20:.0f} MiB for a 1 MB file"
