"""Several processes over one set of vector files: readers share the mapped pages and see a writer's
new batch within a second; a writer killed (SIGKILL) mid-append leaves a readable index."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from docenrich.storage import SQLiteStore
from docenrich.vectorindex.files import VectorFiles, vector_dir
from tests.storeutil import make_batch, pdf_bytes, unit

ROOT = Path(__file__).resolve().parents[2]
MODEL = "test-model"

# A reader as a web process runs one: the store's index, refreshed before each search.
READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from docenrich.storage import SQLiteStore
    store = SQLiteStore(sys.argv[1], vector_mode="exact", hnsw_min_rows=0)
    index = store.vector_index(sys.argv[2])
    for line in sys.stdin:
        index.refresh()
        hits = index.search(np.asarray(json.loads(line), dtype=np.float32), 1)
        sys.stdout.write(json.dumps([hits[0][0] if hits else None, len(index)]) + "\\n")
        sys.stdout.flush()
""")

# A docs worker storing batch after batch of large vectors until it is killed.
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from docenrich.storage import SQLiteStore
    from tests.storeutil import make_batch, pdf_bytes
    store = SQLiteStore(sys.argv[1], vector_mode="exact", hnsw_min_rows=0)
    rng = np.random.default_rng(int(sys.argv[2]))
    for d in range(10_000):
        doc, _ = store.add_document(pdf_bytes(f"w{sys.argv[2]}-{d}"), f"w{d}.pdf")
        store.save_batch(doc.id, 0, make_batch(doc.id, 0, n=99, rng=rng, dim=1024))
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _ask(proc: subprocess.Popen, q: np.ndarray) -> list:
    proc.stdin.write(json.dumps(q.tolist()) + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def _vector_of(st: SQLiteStore, doc_id: str, sid: int) -> np.ndarray:
    return np.asarray(next(r["embedding"] for r in st.export_rows(doc_id) if r["snippet_id"] == sid), np.float32)


def test_two_readers_share_one_file_and_see_a_new_batch_within_a_second(tmp_path):
    """Both processes map the same .vec file, and find a batch saved by another process within a second."""
    data = tmp_path / "data"
    st = SQLiteStore(data, vector_mode="exact", hnsw_min_rows=0)
    rng = np.random.default_rng(1)
    doc, _ = st.add_document(pdf_bytes("first"), "first.pdf")
    st.save_batch(doc.id, 0, make_batch(doc.id, 0, n=40, rng=rng, dim=64))
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(data), MODEL], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT) for _ in range(2)]
    try:
        first = st.snippets(doc.id)[0]
        for r in readers:
            assert _ask(r, _vector_of(st, doc.id, first.id)) == [first.id, 40]
        files = VectorFiles(vector_dir(data, MODEL), MODEL)
        vec_file = str(files.column(files.manifest().base, "vec"))
        for r in readers:
            assert vec_file in Path(f"/proc/{r.pid}/maps").read_text()  # mapped, not copied
        new, _ = st.add_document(pdf_bytes("second"), "second.pdf")
        st.save_batch(new.id, 0, make_batch(new.id, 0, n=10, rng=rng, dim=64))
        saved = time.monotonic()
        target = st.snippets(new.id)[0]
        q = _vector_of(st, new.id, target.id)
        for r in readers:
            while _ask(r, q) != [target.id, 50]:
                assert time.monotonic() - saved < 1.0, "a reader did not see the new batch within a second"
                time.sleep(0.02)
        assert time.monotonic() - saved < 1.0
    finally:
        for r in readers:
            r.kill()
            r.wait()


def test_a_writer_killed_mid_append_leaves_a_readable_index(tmp_path):
    """SIGKILL while a writer's rows are on disk but not yet published: the index still reads, and agrees with SQLite."""
    data = tmp_path / "data"
    st = SQLiteStore(data, vector_mode="exact", hnsw_min_rows=0)
    files = VectorFiles(vector_dir(data, MODEL), MODEL)
    caught = 0
    for attempt in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(data), str(attempt)], env=_env(), cwd=ROOT)
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                m = files.manifest()
                if m is not None and m.rows >= 200:
                    size = files.column(m.base, "vec").stat().st_size
                    if size > m.rows * m.dim * 4:  # rows written past the published ones: mid-append
                        os.kill(writer.pid, signal.SIGKILL)
                        caught += 1
                        break
        finally:
            writer.kill()
            writer.wait()
        m = files.manifest()
        assert m is not None and m.rows >= 200
        index = st.vector_index(MODEL)
        index.refresh()  # catches up with what SQLite committed, past the leftovers
        ids, _, matrix, _ = st.load_vectors(MODEL)
        assert len(index) == len(ids)
        q = unit(np.random.default_rng(attempt), 1024)
        want = ids[np.argsort(-(matrix @ q), kind="stable")[:10]].tolist()
        assert [sid for sid, _ in index.search(q, 10)] == want
    assert caught >= 1, "no kill landed inside an append"
