"""A database blip is retried, never fatal: a PostgreSQL restart mid-ingestion and a SQLite write
lock held past the busy timeout both end with every document ready and nothing stored twice."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

import pytest

from tests.helpers.pdfs import text_pdf
from tests.helpers.wait import wait_for
from tests.stack import reference_snippets

pytestmark = pytest.mark.slow

BATCH_PAGES = 2


def three_documents() -> list[tuple[str, bytes]]:
    return [(f"blip-{i}.pdf", text_pdf(10, seed=300 + i, sections=2, words=60)) for i in range(3)]


def assert_like_a_clean_run(stack, ids: dict[str, bytes]) -> None:
    done = stack.wait_finished(list(ids), timeout=300)
    for doc_id, data in ids.items():
        doc = done[doc_id]
        assert doc.state == "ready" and not doc.notes, (doc.state, doc.error)
        assert doc.snippet_count == len(reference_snippets(data, doc_id, BATCH_PAGES)), doc_id


def test_a_postgresql_restart_mid_ingestion_loses_no_document(make_stack, pg_server, pg_url):
    stack = make_stack(DATABASE_URL=pg_url, SNIPPET_BATCH_PAGES=BATCH_PAGES)
    stack.workers_parallel(("blip-models", "models", None, {}), ("blip-docs", "docs", None, {}))
    ids = {stack.add_document(data, name): data for name, data in three_documents()}
    first = next(iter(ids))
    wait_for(lambda: stack.store.get_document(first).batches_done >= 1, 120, 0.2, "a first batch to be stored")
    stack.store.close()  # the test's own connection goes down with the server too
    pg_server.restart(down=3.0)
    assert_like_a_clean_run(stack, ids)


def test_a_sqlite_write_lock_held_for_15_s_is_waited_out(make_stack):
    stack = make_stack(SNIPPET_BATCH_PAGES=BATCH_PAGES)
    stack.worker("lock-all")
    ids = {stack.add_document(data, name): data for name, data in three_documents()}
    held = threading.Event()

    def hold_the_write_lock():
        with contextlib.closing(sqlite3.connect(stack.data_dir / "docenrich.sqlite3", isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(15)  # holding the lock this long is what the test is about
            conn.execute("COMMIT")

    locker = threading.Thread(target=hold_the_write_lock)
    locker.start()
    assert held.wait(10)
    locker.join()
    assert_like_a_clean_run(stack, ids)
