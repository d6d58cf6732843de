"""Several processes over one word index: web-like readers see a writer's new batch and deletions at
once from the same files, and a writer killed (SIGKILL) mid-append leaves a readable index."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from docenrich.storage import SQLiteStore
from tests.unit.test_postings_index import add_doc

ROOT = Path(__file__).resolve().parents[2]

# A reader as a web process runs one: the store's lexical search, which refreshes the index first.
READER = textwrap.dedent("""
    import json, sys
    from docenrich.storage import SQLiteStore
    store = SQLiteStore(sys.argv[1], lexical_min_rows=0)
    for line in sys.stdin:
        hits = store.lexical_search(line.strip(), 5)
        view = store.words._view
        sys.stdout.write(json.dumps([[h[0] for h in hits], view.generation if view else 0]) + "\\n")
        sys.stdout.flush()
""")

# A docs worker saving batch after batch until it is killed.
WRITER = textwrap.dedent("""
    import sys
    from docenrich.storage import SQLiteStore
    from tests.unit.test_postings_index import add_doc
    store = SQLiteStore(sys.argv[1], lexical_min_rows=0)
    for d in range(100_000):
        add_doc(store, f"w{d}", [f"written batch {d} snippet {i} " + "filler words " * 40 for i in range(50)])
""")


def _start(code: str, data: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _ask(proc: subprocess.Popen, query: str) -> list:
    proc.stdin.write(query + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_readers_share_one_index_and_follow_a_writer(tmp_path):
    writer = SQLiteStore(tmp_path / "data", lexical_min_rows=0)
    add_doc(writer, "a", ["the first manual mentions GRAPHICS_TOOLKIT"])
    readers = [_start(READER, tmp_path / "data") for _ in range(2)]
    try:
        first = [_ask(r, "GRAPHICS_TOOLKIT") for r in readers]
        assert [len(ids) for ids, _ in first] == [1, 1] and first[0][1] == first[1][1] > 0
        b = add_doc(writer, "b", ["a second mention of GRAPHICS_TOOLKIT"])
        published = writer.words.files.manifest().generation  # the writer appended the batch itself
        t0 = time.monotonic()
        seen = [_ask(r, "GRAPHICS_TOOLKIT") for r in readers]
        assert time.monotonic() - t0 < 1.0
        # Both map what the writer published (or a merge of it one of them made since).
        assert [len(ids) for ids, _ in seen] == [2, 2]
        assert min(gen for _, gen in seen) >= published > first[0][1]
        writer.delete_document(b)
        assert [len(_ask(r, "GRAPHICS_TOOLKIT")[0]) for r in readers] == [1, 1]
    finally:
        for r in readers:
            r.kill()
            r.wait()
        writer.close()


def test_a_writer_killed_mid_append_leaves_a_readable_index(tmp_path):
    store = SQLiteStore(tmp_path / "data", lexical_min_rows=0)
    store.words.background = False
    add_doc(store, "seed", ["written seed"])
    assert store.words.refresh()
    writer = _start(WRITER, tmp_path / "data")
    time.sleep(4)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert store.words.refresh()
    m = store.words.files.manifest()
    assert m.rows - m.deleted == store.text_index_state()[1] > 50
    assert store.lexical_search("seed", 5) and len(store.lexical_search("written batch snippet", 100)) == 100
    store.close()
