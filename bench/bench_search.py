"""Search benchmark: /api/search latency at 1k, 10k and 100k stored snippets (embed / retrieve /
rerank, retrieve being lexical + dense + fusion), hybrid retrieval and VectorIndex.search alone,
search p95 while a 500-page PDF is ingested vs idle, and the web process's memory with the index loaded.

    python bench/bench_search.py [--quick]
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.common import Figure, Options, Target, fmt, ms, ratio  # noqa: E402

log = logging.getLogger(__name__)

DIM = 384
SNIPPETS_PER_DOC = 1000
SNIPPETS_PER_BATCH = 250
QUERIES = (
    "fundamental group of a topological space",
    "definition of a metric space",
    "compactness and continuous maps",
    "how to insert an image in a PDF",
    "password protected document",
    "table of EU countries and their capitals",
    "homotopy equivalence of paths",
    "multicolumn layout in LaTeX",
    "Hausdorff separation axiom",
    "covering spaces and lifting",
)


# --------------------------------------------------------------------------- synthetic store


class SyntheticFiller:
    """Grows the store with synthetic documents: corpus texts cycled, random unit vectors recorded
    under the bundled embedder's name, saved through Store.save_batch as the pipeline does."""

    def __init__(self, seed: int = 11):
        import numpy as np

        from docenrich.storage import SQLiteStore as Store

        self.store = Store(common.data_dir())
        self.rng = np.random.default_rng(seed)
        self.texts = [t for batch in common.embedding_texts(common.corpus_batches()) for t in batch if t.strip()]
        self.total = 0
        self.docs = 0
        self.seconds = 0.0

    def grow_to(self, target: int) -> None:
        start = time.perf_counter()
        while self.total < target:
            self._add_document(min(SNIPPETS_PER_DOC, target - self.total))
        self.seconds += time.perf_counter() - start

    def _add_document(self, count: int) -> None:
        doc, _ = self.store.add_document(f"%PDF-1.4 synthetic benchmark document {self.docs}".encode(),
                                         f"synthetic-{self.docs:04d}.pdf")
        batches = -(-count // SNIPPETS_PER_BATCH)
        self.store.begin_batches(doc.id, batches)
        for b in range(batches):
            size = min(SNIPPETS_PER_BATCH, count - b * SNIPPETS_PER_BATCH)
            self.store.save_batch(doc.id, b, self._snippets(doc.id, b * SNIPPETS_PER_BATCH, size))
        self.docs += 1
        self.total += count

    def _snippets(self, doc_id: str, first: int, count: int) -> list:
        import numpy as np

        from docenrich.records import Snippet

        vectors = self.rng.standard_normal((count, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return [
            Snippet(text=self.texts[(first + i) % len(self.texts)], page=(first + i) // 10 + 1, document_id=doc_id,
                    ordinal=first + i, embedding=vectors[i], embedding_model=common.BUNDLED_EMBEDDER)
            for i in range(count)
        ]


# --------------------------------------------------------------------------- searches


def search_once(web: common.WebProcess, query: str, rerank: bool = True) -> dict:
    """One GET /api/search: wall seconds plus the server's timings_ms split."""
    seconds, body = web.get("/api/search", q=query, k=10, rerank=int(rerank))
    return {"wall_s": seconds, **{k: v / 1000 for k, v in body["timings_ms"].items()}, "reranked": body["reranked"]}


def search_series(web: common.WebProcess, count: int, rerank: bool = True) -> list[dict]:
    return [search_once(web, QUERIES[i % len(QUERIES)], rerank) for i in range(count)]


def column(samples: list[dict], key: str) -> list[float]:
    return [s[key] for s in samples]


def index_alone(calls: int) -> dict[str, float]:
    """VectorIndex.search (k=30, the rerank pool) in this process over everything stored."""
    import numpy as np

    from docenrich.storage import SQLiteStore as Store
    from docenrich.vectorindex import VectorIndex

    index = VectorIndex(Store(common.data_dir()), common.BUNDLED_EMBEDDER)
    index.refresh()
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((calls, DIM)).astype(np.float32)
    times = [common.timed(index.search, q, 30)[0] for q in queries]
    return {**common.summarize(times), "vectors": len(index)}


def hybrid_alone(calls: int) -> dict[str, float]:
    """Lexical (FTS5 BM25, in a thread) + dense (VectorIndex) top-50 each, fused, in this process: the
    retrieval the web process runs per hybrid search, without the query embedding or the rerank."""
    import numpy as np

    from docenrich import search
    from docenrich.storage import SQLiteStore as Store
    from docenrich.vectorindex import VectorIndex

    store = Store(common.data_dir())
    index = VectorIndex(store, common.BUNDLED_EMBEDDER)
    index.refresh()
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((calls, DIM)).astype(np.float32)
    split: dict[str, list[float]] = {"lexical": [], "dense": [], "fuse": [], "total": []}
    for i in range(calls):
        # As a hybrid search does: the lexical search in a thread, beside the vector scan.
        t0 = time.perf_counter()
        pending = search._pool().submit(search._lexical, store, QUERIES[i % len(QUERIES)], search.FUSION_DEPTH,
                                        None, search.EXCLUDED_KINDS)
        dense = index.search(vectors[i], search.FUSION_DEPTH)
        t1 = time.perf_counter()
        lexical, lexical_ms = pending.result()
        t2 = time.perf_counter()
        search.fuse({"dense": dense, "lexical": lexical})
        t3 = time.perf_counter()
        for key, value in (("lexical", lexical_ms / 1000), ("dense", t1 - t0), ("fuse", t3 - t2), ("total", t3 - t0)):
            split[key].append(value)
    return {**{f"{k}_p50": common.median(v) for k, v in split.items()},
            **common.summarize(split["total"]), "vectors": len(index)}


# --------------------------------------------------------------------------- during ingestion


def during_ingest(env: common.BenchEnv, web: common.WebProcess, count: int, pages: int) -> dict:
    """`count` searches while a `pages`-page PDF is being ingested; the document is then deleted,
    the queues purged and the worker drained, so the next measurement starts idle."""
    from celery_worker import ping_task
    from docenrich.storage import SQLiteStore as Store

    store = Store(common.data_dir())
    doc = web.upload(common.generated_pdf(pages))
    common.wait_for(lambda: (store.get_document(doc["id"]).batches_done or 0) >= 1, 600, 0.1,
                    "the first batch of the big PDF")
    window, docs_window = common.LogWindow(env.worker("models")), common.LogWindow(env.worker("docs"))
    samples = search_series(web, count)
    state = store.get_document(doc["id"])
    tasks = {"embed_batch": window.durations("docenrich.embed_batch"),
             "extract_pages": docs_window.durations("docenrich.extract_pages"),
             "continued": window.ignored("docenrich.embed_batch")}
    recycles = window.recycles()
    web.delete(doc["id"])
    for _ in range(2):  # a task running at the first purge may queue one more
        env.purge()
        ping_task.delay().get(timeout=600)  # returns once the running task is done
    return {"samples": samples, "batches_done_at_end": state.batches_done, "batches_total": state.batches_total,
            "state_at_end": state.state, "tasks_s": tasks, "recycles": recycles}


def idle_vs_ingest(env: common.BenchEnv, web: common.WebProcess, blocks: int, per_block: int, pages: int) -> dict:
    """Blocks of idle searches and of searches during an ingestion, alternately, so that load drifts on
    the machine hit both sides."""
    idle, busy = [], []
    for _ in range(blocks):
        search_once(web, QUERIES[0], rerank=False)  # the index reloads after the previous block's deletion
        idle += search_series(web, per_block)
        busy.append(during_ingest(env, web, per_block, pages))
    merged = {k: [x for b in busy for x in b[k]] for k in ("samples",)}
    merged["tasks_s"] = {name: [x for b in busy for x in b["tasks_s"][name]] for name in busy[0]["tasks_s"]}
    merged["recycles"] = sum(b["recycles"] for b in busy)
    merged["blocks"] = busy
    merged["pages"] = pages
    return {"idle": idle, "busy": merged}


# --------------------------------------------------------------------------- figures


def latency_rows(fig: Figure, label: str, samples: list[dict]) -> None:
    s = {k: common.summarize(column(samples, k)) for k in ("wall_s", "embed", "retrieve", "rerank")}
    fig.add(f"{label}: /api/search p50 / p95 (wall)", f"{ms(s['wall_s']['p50'])} / {ms(s['wall_s']['p95'])}",
            f"n={s['wall_s']['n']}")
    fig.add(f"{label}: embed / retrieve / rerank p50",
            f"{ms(s['embed']['p50'])} / {ms(s['retrieve']['p50'])} / {ms(s['rerank']['p50'])}",
            f"p95 {ms(s['embed']['p95'])} / {ms(s['retrieve']['p95'])} / {ms(s['rerank']['p95'])}")


def measure_levels(env: common.BenchEnv, web: common.WebProcess, opts: Options) -> dict:
    """Searches at each store size; at the largest, the idle searches are those of the idle vs
    during-ingestion comparison."""
    sizes = opts.pick((1_000, 10_000, 100_000), (1_000, 5_000))
    full, fast = opts.pick(4, 2), opts.pick(15, 5)
    filler = SyntheticFiller()
    levels: dict[int, dict] = {}
    compared: dict = {}
    for size in sizes:
        filler.grow_to(size)
        catch_up = search_once(web, QUERIES[0], rerank=False)  # the index loads the new vectors
        search_series(web, 1)
        levels[size] = {"catch_up": catch_up, "fast": search_series(web, fast, False)}
        if size == sizes[-1]:
            compared = idle_vs_ingest(env, web, opts.pick(3, 1), opts.pick(8, 3), opts.pick(500, 100))
            levels[size]["full"] = compared["idle"]
            floor = rerank_floor(web, opts.pick(10, 3))
        else:
            levels[size]["full"] = search_series(web, full)
    return {"levels": levels, "busy": compared["busy"], "fill_s": filler.seconds, "filled": filler.total,
            "docs": filler.docs, "floor": floor}


def figure_search(env: common.BenchEnv, opts: Options) -> tuple[Figure, Figure]:
    env.run_workers()
    web = env.web()
    data = measure_levels(env, web, opts)
    levels, busy = data["levels"], data["busy"]
    top = max(levels)
    alone = index_alone(opts.pick(200, 50))
    hybrid = hybrid_alone(opts.pick(200, 50))
    web_mem = web.memory()
    fig = Figure(
        "search", "5. Search latency",
        f"GET /api/search?k=10 through the web app (python app.py) and the worker, rerank of the top {_top_n()} on; "
        f"stored snippets are synthetic (corpus texts, random unit vectors under {common.BUNDLED_EMBEDDER}) inserted "
        f"through Store.save_batch; per size {len(levels[min(levels)]['full'])} searches with rerank and "
        f"{len(levels[top]['fast'])} without (retrieve samples), the query cache off (every search embeds its "
        f"query); at {top:,}, {len(busy['blocks'])} blocks of "
        f"{len(levels[top]['full']) // len(busy['blocks'])} idle searches alternate with as many blocks during the "
        f"ingestion of a {busy['pages']}-page PDF (uploaded through the API, deleted and drained after each block); "
        f"split from the response's timings_ms",
        "python bench/bench_search.py" + (" --quick" if opts.quick else ""),
        data={**data, "levels": {str(k): v for k, v in levels.items()}, "index_alone": alone, "hybrid_alone": hybrid,
              "web_memory": web_mem},
    )
    retrieve_target = Target(30.0, False, " ms")
    for size, level in levels.items():
        latency_rows(fig, f"{size:,} snippets", level["full"])
        samples = level["full"] + level["fast"]
        value = common.median(column(samples, "retrieve")) * 1000
        split = " + ".join(f"{stage} {ms(common.median(column(samples, stage)))}" for stage in ("lexical", "dense", "fuse"))
        fig.add(f"{size:,} snippets: retrieve (lexical + dense + fusion) p50, all {len(samples)} searches",
                f"{fmt(value)} ms", f"p50 {split}; first search after growing (index catch-up): "
                f"{ms(level['catch_up']['retrieve'])}", retrieve_target if size == top else None,
                value if size == top else None)
    fig.add(f"hybrid retrieval alone (FTS5 top 50 beside VectorIndex top 50, + fusion), {hybrid['vectors']:,} snippets, "
            "p50 / p95", f"{ms(hybrid['p50'])} / {ms(hybrid['p95'])}",
            f"lexical {ms(hybrid['lexical_p50'])}, dense {ms(hybrid['dense_p50'])}, fusion {ms(hybrid['fuse_p50'])} "
            "(p50)", retrieve_target, hybrid["p50"] * 1000)
    fig.add(f"VectorIndex.search alone, k=30, {alone['vectors']:,} vectors, p50 / p95",
            f"{ms(alone['p50'])} / {ms(alone['p95'])}")
    idle = levels[top]["full"]
    idle_p95 = common.percentile(column(idle, "wall_s"), 95)
    busy_p95 = common.percentile(column(busy["samples"], "wall_s"), 95)
    latency_rows(fig, f"during a {busy['pages']}-page ingest ({top:,} stored)", busy["samples"])
    r = ratio(busy_p95, idle_p95)
    fig.add("search p95 during ingestion / idle", f"{ms(busy_p95)} / {ms(idle_p95)}", f"{r:.2f}×",
            Target(1.5, False, "×"), r)
    idle_rows(fig, idle, data["floor"])
    fig.notes.append(f"Filling the store to {data['filled']:,} snippets took {fmt(data['fill_s'])} s "
                     f"({fmt(data['filled'] / data['fill_s'])} snippets/s through save_batch, {data['docs']} documents).")
    ends = ", ".join(f"{b['batches_done_at_end']}/{b['batches_total']} ({b['state_at_end']})" for b in busy["blocks"])
    fig.notes.append(f"Page batches of the big PDF stored when each block's last search returned: {ends} — ingestion "
                     f"ran throughout every block.")
    fig.notes += search_causes(levels[top], busy, alone)
    return fig, web_memory_figure(web_mem, alone["vectors"])


def rerank_floor(web: common.WebProcess, rounds: int) -> dict:
    """The floor for the rerank: a bare in-process CrossEncoder.predict on the very pairs a search
    reranks (its candidates, from the same search without rerank), alternating with real searches."""
    from sentence_transformers import CrossEncoder

    from docenrich.config import get_settings

    depth = _top_n()
    model = CrossEncoder(get_settings().reranker_model, device="cpu")
    predict, searches = [], []
    for i in range(rounds):
        query = QUERIES[i % len(QUERIES)]
        _, body = web.get("/api/search", q=query, k=depth, rerank=0)
        pairs = [(query, r["text"]) for r in body["results"]]
        predict.append(common.timed(model.predict, pairs, show_progress_bar=False)[0])
        searches.append(search_once(web, query))
    return {"predict": predict, "searches": searches, "depth": depth}


def idle_rows(fig: Figure, idle: list[dict], floor: dict) -> None:
    """The idle-search targets, and the ratio to the bare cross-encoder on the same pairs."""
    walls = column(idle, "wall_s")
    p50, p95 = common.median(walls), common.percentile(walls, 95)
    fig.add("idle search p50 (wall, test cross-encoder, default depth)", f"{fmt(p50)} s", f"n={len(walls)}",
            Target(1.2, False, " s"), p50)
    fig.add("idle search p95 (wall)", f"{fmt(p95)} s", "", Target(2.0, False, " s"), p95)
    pred = common.median(floor["predict"])
    walls = column(floor["searches"], "wall_s")
    rerank = common.median(column(floor["searches"], "rerank"))
    fig.add(f"bare CrossEncoder.predict on the same {floor['depth']} pairs, in-process, p50", ms(pred),
            f"search p50 {ms(common.median(walls))} = {ratio(common.median(walls), pred):.2f}× the bare predict; "
            f"its rerank stage {ms(rerank)} = {ratio(rerank, pred):.2f}× (n={len(walls)}, alternating)")


def search_causes(idle: dict, busy: dict, alone: dict) -> list[str]:
    """Where search time goes, from the measured splits."""
    s_idle = {k: common.summarize(column(idle["full"], k)) for k in ("embed", "rerank", "wall_s")}
    s_busy = {k: common.summarize(column(busy["samples"], k)) for k in ("embed", "rerank", "wall_s")}
    embed = busy["tasks_s"]["embed_batch"]
    extract = busy["tasks_s"]["extract_pages"]
    retrieve = common.median(column(idle["full"] + idle["fast"], "retrieve"))
    mib = alone["vectors"] * DIM * 4 / 2**20
    return [
        f"Retrieve ({ms(retrieve)} p50 at {alone['vectors']:,}) is BM25 over the FTS5 index, the index refresh check, "
        f"VectorIndex.search — an "
        f"exact {alone['vectors']:,} × {DIM} float32 mat-vec that reads {mib:.0f} MiB per query, memory-bandwidth "
        f"bound ({ms(alone['p50'])} alone) — the fusion, and reading the candidates from SQLite.",
        f"Rerank is {s_idle['rerank']['p50'] / s_idle['wall_s']['p50']:.0%} of an idle search ({ms(s_idle['rerank']['p50'])} "
        f"p50): the cross-encoder scores the top {_top_n()} candidates, shortest first, in micro-batches of 8 "
        f"pairs truncated at the model's limit.",
        f"During ingestion a search's tasks go to the `interactive` queue, which the model worker reads first; "
        f"the embedding of a page batch runs in timed micro-batches and continues in a new message whenever "
        f"interactive work waits ({len(busy['tasks_s']['continued'])} such hand-offs in these blocks), so a search's "
        f"embedding waits for one micro-batch at most (EMBED_MICRO_BATCH_SECONDS); between its embedding and its "
        f"rerank the search holds the worker, so no micro-batch starts before the rerank. Finished embed_batch parts "
        f"took {_ms_stats(embed)}; extraction ran in the docs worker ({_ms_stats(extract)} per page batch). "
        f"Embed p95 went from {ms(s_idle['embed']['p95'])} idle to {ms(s_busy['embed']['p95'])}, rerank p95 from "
        f"{ms(s_idle['rerank']['p95'])} to {ms(s_busy['rerank']['p95'])}; the pool child was recycled "
        f"{busy['recycles']} times meanwhile (figure 3). With {len(busy['samples'])} searches per side the p95 is "
        f"close to the maximum, so this ratio is noisy.",
    ]


def web_memory_figure(web_mem: dict, vectors: int) -> Figure:
    mem = Figure("memory_web", "6b. Web process memory",
                 f"python app.py after the searches above, its VectorIndex holding {vectors:,} × {DIM} float32",
                 "python bench/bench_search.py", data=web_mem)
    mem.add(f"web process RSS at {vectors:,} snippets", f"{web_mem['rss_mib']:.0f} MiB")
    mem.add(f"web process peak RSS (VmHWM) at {vectors:,} snippets", f"{web_mem['hwm_mib']:.0f} MiB")
    mem.notes.append(f"The vectors alone are {vectors * DIM * 4 / 2**20:.0f} MiB; the index doubles its buffer when it "
                     f"grows, so it can hold up to twice that.")
    return mem


def _ms_stats(values: list[float]) -> str:
    return f"{ms(common.median(values))} p50, max {ms(max(values))}" if values else "n/a"


def _top_n() -> int:
    """The rerank depth the searches here use (the CPU default unless SEARCH_RERANK_TOP_N is set)."""
    from docenrich.config import get_settings

    settings = get_settings()
    return settings.search_rerank_top_n or settings.rerank_depth_cpu


def run(env: common.BenchEnv, opts: Options) -> list[Figure]:
    return list(figure_search(env, opts))


if __name__ == "__main__":
    sys.exit(common.cli(run, __doc__.splitlines()[0]))
