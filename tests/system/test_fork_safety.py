"""Worker parents fork children that cannot hang on a native library's lock: nothing that starts
native thread pools (onnxruntime, torch, OpenMP) is loaded in a parent, a docs worker runs hundreds
of table-heavy page batches through many child recycles, and each task kind has its own time limit."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.pdfs import table_pdf
from tests.helpers.wait import wait_for
from tests.stack import snippet_rows

pytestmark = pytest.mark.slow

# Shared libraries that start thread pools of their own once used.
NATIVE_POOLS = ("libonnxruntime", "onnxruntime_pybind11_state", "libtorch", "libgomp")


def _native_pools(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [name for name in NATIVE_POOLS if name in maps]


def test_worker_parents_load_no_native_thread_pools_and_children_do(make_stack):
    stack = make_stack(MODEL_PRELOAD="true")
    docs, models = stack.workers_parallel(("docs", "docs", None, {}), ("models", "models", None, {}))
    for worker in (docs, models):
        assert _native_pools(worker.process.pid) == [], f"{worker.name}'s parent loaded native thread pools"
    # The model worker's pool child loads torch (after the fork), the parent still has none.
    wait_for(lambda: any("libtorch" in _native_pools(pid) for pid in models.child_pids()), 120, 0.5,
             "the model child to load torch")
    assert _native_pools(models.process.pid) == []


def test_each_task_kind_has_its_own_time_limit(make_stack):
    stack = make_stack(EXTRACT_TIME_LIMIT="7/9", STORE_TIME_LIMIT="11/13")
    worker = stack.worker("docs", "docs")
    registered = stack.app.control.inspect(destination=[worker.hostname], timeout=5).registered(
        "soft_time_limit", "time_limit")[worker.hostname]
    info = {line.split(" ", 1)[0]: line for line in registered}
    assert "soft_time_limit=7" in info["docenrich.extract_pages"] and "time_limit=9" in info["docenrich.extract_pages"]
    assert "soft_time_limit=11" in info["docenrich.store_snippets"]
    # The public task, sized by its caller, keeps the global limits.
    assert "soft_time_limit=1500" in info["docenrich.enrich_snippets"]


def test_hundreds_of_table_batches_through_child_recycles_without_a_hang(make_stack):
    pages = 304
    stack = make_stack(SNIPPET_BATCH_PAGES="1", SNIPPET_IMAGES="lazy")
    docs, _ = stack.workers_parallel(("docs", "docs", None, {"MAX_TASKS_PER_CHILD": "40"}),
                                     ("models", "models", None, {}))
    doc_id = stack.add_document(table_pdf(pages), "tables.pdf")
    done = stack.wait_finished([doc_id], timeout=900)[doc_id]
    assert done.state == "ready", done.error
    assert done.batches_done == pages
    rows = snippet_rows(stack.data_dir, doc_id)
    tables = [r for r in rows if r[3].startswith("|Sample|")]
    assert len(tables) == pages and all(r[4] == 1 for r in rows)
    log = docs.log_text()
    # Every extraction task ran in a child that loaded the layout model itself, and children were recycled.
    assert log.count("layout model loaded in process") >= pages * 2 // 40 - 1, log[-3000:]
    assert "Hard time limit" not in log and "exited with signal" not in log.replace("SIGTERM", "")
