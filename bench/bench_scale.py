"""Dense search over the shared memory-mapped vector files: exact scan against a usearch HNSW graph.

    python bench/bench_scale.py [--sizes 10000,100000] [--out bench/SCALE.md]

Clustered synthetic 1,024-d unit vectors (bench_pgvector.clustered), appended batch by batch to
the vector files as the docs workers append them (vectorindex/files.py), then searched by
MappedIndex (vectorindex/mapped.py). For each size and index choice: retrieval p50/p95 unfiltered and
with a filter keeping 1% of the rows, recall@10 against exact, RSS and PSS per process with 2 and
4 processes mapping the same files (/proc/<pid>/smaps_rollup), time from a process start to its
first answer, the index build time, and append throughput in the first and last 10% of the load.
Writes bench/SCALE.md and bench/scale_latency.png, bench/scale_rss.png.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_pgvector  # noqa: E402

DIM = 1024
EMBEDDER = "bench"
PER_DOC = 100  # rows per document: a 1% filter names 1% of the documents
BATCH = 1000
QUERIES = 200
K = 10
MODES = ("exact", "hnsw")


def load(directory: Path, vectors: np.ndarray) -> dict:
    """Append the vectors batch by batch as writers do; the rates of the first and last 10%."""
    from docenrich.vectorindex.files import Manifest, VectorFiles

    files = VectorFiles(directory, EMBEDDER)
    n = len(vectors)
    m = Manifest(embedder=EMBEDDER, dim=DIM)
    codes: dict[str, int] = {}
    times = []
    with files.locked():
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            t = time.perf_counter()
            changes = {"removed": [], "last_seq": 0, "ids": np.arange(start, stop, dtype=np.int64) + 1,
                       "docs": np.array([f"{i // PER_DOC:016x}" for i in range(start, stop)]),
                       "matrix": vectors[start:stop], "max_rowid": stop, "state": (stop, 0),
                       "pages": np.ones(stop - start, dtype=np.int32), "kinds": ["text"] * (stop - start)}
            m = files.append(m, changes, codes)
            files.publish(m)
            times.append((stop - start, time.perf_counter() - t))
    tenth = max(1, len(times) // 10)
    rate = lambda part: sum(c for c, _ in part) / sum(s for _, s in part)  # noqa: E731
    return {"first": rate(times[:tenth]), "last": rate(times[-tenth:]), "seconds": sum(s for _, s in times)}


def searcher(directory: Path, mode: str):
    """A MappedIndex over the files, as a web process opens it (with its VECTOR_MAP_BUDGET_MB)."""
    from docenrich.config import get_settings
    from docenrich.vectorindex.files import ManifestSource, VectorFiles
    from docenrich.vectorindex.mapped import MappedIndex

    files = VectorFiles(directory, EMBEDDER)
    index = MappedIndex(ManifestSource(files), EMBEDDER, directory.parent, mode, 0,
                        page_budget=get_settings().vector_map_budget_mb * 2**20)
    index.files = files  # the benchmark's own directory, not the slug a data directory would use
    return index


def timed(index, queries: np.ndarray, docs=None) -> tuple[list[list[int]], float, float]:
    """Results and p50/p95 milliseconds of one search per query."""
    out, ms = [], []
    for q in queries:
        t = time.perf_counter()
        hits = index.search(q, K, document_ids=docs)
        ms.append(1000 * (time.perf_counter() - t))
        out.append([sid for sid, _ in hits])
    return out, float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def recall(got: list[list[int]], want: list[list[int]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / max(1, len(w)) for g, w in zip(got, want, strict=True)]))


def processes(directory: Path, mode: str, count: int, queries_file: Path) -> list[dict]:
    """count processes mapping the files at once: each one's start-to-first-answer, RSS and PSS."""
    code = (
        "import sys,time,json,numpy as np; t0=float(sys.argv[4]); sys.path[:0]=[sys.argv[5], sys.argv[5]+'/bench'];"
        "import bench_scale as b; from pathlib import Path;"
        "ix=b.searcher(Path(sys.argv[1]), sys.argv[2]); ix.refresh(); qs=np.load(sys.argv[3]);"
        "ix.search(qs[0], 10); first=time.time()-t0;"
        "[ix.search(q, 10) for q in qs];"
        "r={l.split(':')[0]: int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.split(':')[0] in ('Rss','Pss')};"
        "print(json.dumps({'first': first, **r}), flush=True); sys.stdin.read()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(directory), mode, str(queries_file), str(time.time()),
                               str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    # Every process reports while all are still alive, so the shared pages are counted shared.
    found = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.stdin.close()
        p.wait()
    return found


def run_size(n: int, work: Path) -> list[dict]:
    """Every measurement for one size, one row per index choice."""
    from docenrich.vectorindex.files import VectorFiles
    from docenrich.vectorindex.mapped import build_graph

    bench_pgvector.DIM = DIM
    vectors = bench_pgvector.clustered(n, seed=n)
    queries = bench_pgvector.questions(vectors, QUERIES, seed=n + 1)
    directory = work / f"n{n}" / "vectors" / EMBEDDER
    ingest = load(directory, vectors)
    del vectors
    qfile = work / f"q{n}.npy"
    np.save(qfile, queries[:50])
    filter_docs = [f"{d:016x}" for d in range(0, n // PER_DOC, 100)]  # every 100th document: 1%
    exact = searcher(directory, "exact")
    exact.refresh()
    want, _, _ = timed(exact, queries)
    want_f, _, _ = timed(exact, queries, filter_docs)
    rows = []
    for mode in MODES:
        build = 0.0
        if mode == "hnsw":
            t = time.perf_counter()
            build_graph(VectorFiles(directory, EMBEDDER), 0)
            build = time.perf_counter() - t
        index = searcher(directory, mode)
        index.refresh()
        got, p50, p95 = timed(index, queries)
        got_f, fp50, fp95 = timed(index, queries, filter_docs)
        one = processes(directory, mode, 1, qfile)
        two, four = processes(directory, mode, 2, qfile), processes(directory, mode, 4, qfile)
        rows.append({"n": n, "mode": mode, "p50": p50, "p95": p95, "fp50": fp50, "fp95": fp95,
                     "recall": recall(got, want), "frecall": recall(got_f, want_f), "build": build,
                     "first": float(np.median([p["first"] for p in four])), "first1": one[0]["first"],
                     "rss2": np.mean([p["Rss"] for p in two]) / 1024, "pss2": np.mean([p["Pss"] for p in two]) / 1024,
                     "rss4": np.mean([p["Rss"] for p in four]) / 1024, "pss4": np.mean([p["Pss"] for p in four]) / 1024,
                     "ingest_first": ingest["first"], "ingest_last": ingest["last"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def plots(rows: list[dict], out_dir: Path) -> None:
    """Latency and per-process memory against size, one line per index choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, keys, label in (("scale_latency.png", ("p50", "fp50"), "search p50 (ms)"),
                              ("scale_rss.png", ("rss4", "pss4"), "per process, 4 processes (MiB)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode in MODES:
            mine = [r for r in rows if r["mode"] == mode]
            for key in keys:
                ax.plot([r["n"] for r in mine], [r[key] for r in mine], marker="o", label=f"{mode} {key}")
        ax.set_xscale("log")
        ax.set_xlabel("vectors (1,024-d)")
        ax.set_ylabel(label)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)


def report(rows: list[dict], sizes: list[int], skipped: str) -> str:
    """bench/SCALE.md."""
    from docenrich.config import get_settings
    from docenrich.vectorindex.mapped import EF_SEARCH

    lines = [
        "# Shared vector files at scale", "",
        f"`make bench-scale` (bench/bench_scale.py): clustered synthetic {DIM}-d unit vectors, {QUERIES} queries, "
        f"k={K}, on this 2-core machine. Sizes: {', '.join(f'{s:,}' for s in sizes)}. {skipped}", "",
        "exact: a float32 scan over the memory-mapped rows (BLAS). hnsw: usearch HNSW graph "
        f"(float16, M=16, ef_construction=128, ef_search={EF_SEARCH}; a random fifth of the rows added first, "
        "the rest grouped by cluster, vectorindex/order.py) mapped with `view=True`, candidates rescored "
        "on the float32 rows. Filtered: a filter keeping 1% of the rows (1 document in 100); recall is "
        "against the exact top 10 of the same filter. Each process gives its mapped pages back (they stay in "
        f"the page cache) once it has grown by VECTOR_MAP_BUDGET_MB ({get_settings().vector_map_budget_mb} MiB; "
        "latencies include the page faults that follow). RSS/PSS: mean per process while 2 or 4 processes map "
        "the same files and each ran 50 searches. First answer: from the process start (interpreter and "
        "imports included) to its first result, for a process started alone and the median of 4 started at once "
        "(on 2 cores). Ingest: rows appended per second in the "
        "first and last 10% of the load (batches of 1,000, fsync'd, manifest switched).", "",
        "| vectors | index | p50 ms | p95 ms | filtered p50 | filtered p95 | recall@10 | filtered recall@10 "
        "| build s | first answer s (1 / 4 procs) | RSS/PSS MiB (2 procs) | RSS/PSS MiB (4 procs) | ingest first/last 10% rows/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['mode']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['fp50']:.1f} | {r['fp95']:.1f} "
            f"| {r['recall']:.3f} | {r['frecall']:.3f} | {r['build']:.1f} | {r['first1']:.2f} / {r['first']:.2f} "
            f"| {r['rss2']:.0f} / {r['pss2']:.0f} | {r['rss4']:.0f} / {r['pss4']:.0f} "
            f"| {r['ingest_first']:,.0f} / {r['ingest_last']:,.0f} |")
    lines += ["", "![latency](scale_latency.png)", "", "![memory](scale_rss.png)", ""]
    return "\n".join(lines)


def main() -> None:
    """Run every size and write the report and plots."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--out", default=str(ROOT / "bench" / "SCALE.md"))
    ap.add_argument("--skipped", default="1,000,000 is not run by default: at 1,024-d it is a 4 GiB "
                    "float32 file plus an HNSW build of tens of minutes on 2 cores.")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in sizes:
            rows += run_size(n, Path(tmp))
    out = Path(args.out)
    plots(rows, out.parent)
    out.write_text(report(rows, sizes, args.skipped))
    sys.stdout.write(f"wrote {out}\n")


if __name__ == "__main__":
    main()
