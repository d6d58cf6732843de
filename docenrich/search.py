"""Search: BM25 over the lexical index and exact top-k over the stored vectors, fused, then reranked
in the worker. Returns records; the web app and the command line present them."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from docenrich import client, fusion
from docenrich.config import get_settings
from docenrich.context import MAX_CONTEXT, attach_neighbours
from docenrich.filters import SearchFilter
from docenrich.records import Document, StoredSnippet

log = logging.getLogger(__name__)

MAX_K = 100
MODES = ("hybrid", "dense", "lexical")
# Snippet kinds left out unless asked for: table-of-contents and index pages match every
# specific question by their words and answer none of them.
EXCLUDED_KINDS = frozenset({"toc"})
# Candidates each retriever hands to the fusion (at least): deep enough that a snippet ranked
# well by only one of them survives.
FUSION_DEPTH = 50
# Per-list weights of the weighted-sum fusion (SEARCH_FUSION=weighted): equal weights measured
# best on the development set (bench/DEVSET.md), ahead of reciprocal-rank fusion.
FUSION_WEIGHTS = {"dense": 1.0, "lexical": 1.0, "sparse": 1.0}
# Accelerators that make a deep rerank cheap enough to be the default.
GPU_DEVICES = ("cuda", "mps", "xpu")


@dataclass
class Hit:
    """One result: the snippet, its document, and its scores."""

    rank: int
    snippet: StoredSnippet
    document: Document | None
    vector_score: float  # the retrieval score: cosine (dense), BM25 (lexical) or fused (hybrid)
    rerank_score: float | None = None
    rerank_normalized: float | None = None
    sources: dict[str, int] = field(default_factory=dict)  # rank in each retriever's list
    before: list[StoredSnippet] = field(default_factory=list)  # neighbours in reading order (context)
    after: list[StoredSnippet] = field(default_factory=list)


@dataclass
class SearchResult:
    """What a search found, with the notes a person should read and the time each stage took."""

    query: str
    k: int
    document_id: str | None
    embedder: str
    reranked: bool
    mode: str = "hybrid"
    hits: list[Hit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    collections: list[str] | None = None
    reranked_count: int = 0  # candidates the reranker scored (0: not reranked)
    rerank_depth: int = 0  # candidates it was asked to score at most
    query_cached: bool = False  # the query vector came from the cache, with no model call
    filter: SearchFilter | None = None  # what the search was limited to
    context: int = 0  # neighbours each hit carries on either side


class QueryVectors:
    """A small LRU of query embeddings keyed by (embedder, text): a repeated query skips the model call.

    Entries never go stale: a key names the embedder that made the vector, and the search
    uses that embedder's vectors.
    """

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, embedder: str | None, text: str) -> tuple | None:
        """(vector, embedder, sparse weights) for the text, or None."""
        if not embedder or self.size <= 0:
            return None
        with self._lock:
            hit = self._items.get((embedder, text))
            if hit is not None:
                self._items.move_to_end((embedder, text))
            return hit

    def put(self, embedder: str, text: str, value: tuple) -> None:
        """Remember a query's embedding, dropping the least recently used beyond the size."""
        if self.size <= 0:
            return
        with self._lock:
            self._items[(embedder, text)] = value
            self._items.move_to_end((embedder, text))
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_query_vectors: QueryVectors | None = None


def query_vectors() -> QueryVectors:
    """This process's query-embedding cache (QUERY_CACHE_SIZE entries)."""
    global _query_vectors
    if _query_vectors is None:
        _query_vectors = QueryVectors(get_settings().query_cache_size)
    return _query_vectors


@dataclass
class RerankPlan:
    """How deep to rerank, from the live model workers' devices, or why not to rerank at all."""

    depth: int
    skip: str | None = None


def rerank_plan(status: dict[str, dict], configured: int | None = None) -> RerankPlan:
    """The rerank depth for this search: SEARCH_RERANK_TOP_N if set, else by the workers' device."""
    settings = get_settings()
    workers = [w for w in status.values() if "reranker" in (w.get("models") or {})]
    depth = configured if configured else settings.search_rerank_top_n
    if not depth:
        on_gpu = any(str(w.get("device") or "").startswith(GPU_DEVICES) for w in workers)
        depth = settings.rerank_depth_gpu if on_gpu else settings.rerank_depth_cpu
    reasons = [w["models"]["reranker"].get("unavailable") for w in workers]
    # Skipped only when every live model worker has said it has no reranker: asking would
    # cost a round trip to the worker just to hear that again.
    skip = reasons[0] if reasons and all(reasons) else None
    return RerankPlan(max(1, int(depth)), skip)


def embedder_of(status: dict[str, dict]) -> str | None:
    """The embedder the live model workers use, when they agree on one."""
    names = {(w.get("models") or {}).get("embedder", {}).get("effective") for w in status.values()}
    names.discard(None)
    return names.pop() if len(names) == 1 else None


def fallback_note(status: dict[str, dict], embedder: str | None = None) -> str | None:
    """A sentence when a worker embeds with the offline fallback instead of the configured model."""
    for worker in status.values():
        spec = (worker.get("models") or {}).get("embedder") or {}
        if spec.get("fallback") and (embedder is None or spec.get("effective") == embedder):
            return (
                f"Offline fallback embedder in use: {spec.get('effective')} instead of {spec.get('configured')}; "
                "results are weaker, and documents embedded with the configured model are not searched."
            )
    return None


def _dense(index, vector, n: int, f: SearchFilter) -> list[tuple[int, float]]:
    index.refresh()
    return index.search(vector, n, filter=f)


def _candidates(store, ranked: list[tuple[int, float]]) -> list[tuple[StoredSnippet, float]]:
    """The fused (id, score) list as snippets, leaving out rows deleted meanwhile (every retriever
    applied the filter itself)."""
    found = {s.id: s for s in store.get_snippets([sid for sid, _ in ranked])}
    return [(found[sid], score) for sid, score in ranked if sid in found]


def topic_boost(candidates: list[tuple[StoredSnippet, float]], weight: float) -> list[tuple[StoredSnippet, float]]:
    """Small-to-big scoring: each snippet gains `weight` times the best score of another candidate of the
    same topic (document and heading path), so a topic that answers across its sections rises as a whole."""
    best: dict[tuple, list[float]] = {}
    for snip, score in candidates:
        key = _topic_key(snip)
        if key is not None:
            top = best.setdefault(key, [])
            top.append(score)
            top.sort(reverse=True)
            del top[2:]
    out = []
    for snip, score in candidates:
        top = best.get(_topic_key(snip)) or []
        other = (top[1] if top and top[0] == score else top[0]) if len(top) > 1 else 0.0
        out.append((snip, score + weight * other))
    return sorted(out, key=lambda item: -item[1])


def _topic_key(snip: StoredSnippet) -> tuple | None:
    path = (snip.meta or {}).get("path")
    return (snip.document_id, tuple(path)) if path else None


def _rerank(query: str, candidates: list, top_n: int, notes: list[str]) -> tuple[list, dict | None]:
    """Candidates reordered by the reranker, with its scores by snippet id; unchanged without one."""
    pool = candidates[:top_n]
    try:
        ranked = client.rerank(query, [s.text for s, _ in pool])
    except client.RerankerUnavailable as exc:
        notes.append(f"Reranking unavailable: {exc}. Results are in retrieval order.")
        return candidates, None
    scores = {pool[i][0].id: (float(ranked.scores[i]), float(ranked.normalized[i])) for i in ranked.order}
    return [pool[i] for i in ranked.order], scores


def _status_notes(store, index, embedder: str, status: dict[str, dict]) -> list[str]:
    notes = []
    if note := fallback_note(status, embedder):
        notes.append(note)
    if missing := _unindexed(store, embedder):
        notes.append(
            f"{missing} snippets have no vector from {embedder} (they were embedded with another model) and "
            "cannot be found; run `docenrich reembed` to make them searchable."
        )
    elif not len(index):
        notes.append("No documents are indexed yet: upload a PDF first.")
    return notes


def _hits(store, candidates: list, k: int, rerank_scores: dict | None, sources: dict) -> list[Hit]:
    docs: dict[str, Document | None] = {}
    hits = []
    for rank, (snip, score) in enumerate(candidates[:k], start=1):
        if snip.document_id not in docs:
            docs[snip.document_id] = store.get_document(snip.document_id)
        rr = rerank_scores.get(snip.id) if rerank_scores else None
        hits.append(Hit(rank, snip, docs[snip.document_id], round(float(score), 6),
                        None if rr is None else round(rr[0], 6), None if rr is None else round(rr[1], 6),
                        sources.get(snip.id, {})))
    return hits


@dataclass
class _Retrieval:
    """The candidate lists of one query, before fusion, and the time each took."""

    lists: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    embedder: str = ""
    index: object | None = None
    cached: bool = False


def _lexical(store, query: str, depth: int, f: SearchFilter) -> tuple[list[tuple[int, float]], float]:
    """The BM25 list and the milliseconds it took."""
    t0 = time.perf_counter()
    found = store.lexical_search(query, depth, filter=f)
    return found, _ms(time.perf_counter() - t0)


def _embed(query: str, out: _Retrieval, embedder_hint: str | None) -> tuple:
    """(vector, embedder, sparse weights) of the query: from the cache, else from the model worker."""
    cache = query_vectors()
    hit = cache.get(embedder_hint, query)
    if hit is not None:
        out.cached = True
        return hit
    got = client.embed_query_sparse(query)
    cache.put(got[1], query, got)
    return got


def _retrieve(store, index_for, query: str, mode: str, depth: int, f: SearchFilter,
              embedder_hint: str | None = None) -> _Retrieval:
    """Run the retrievers the mode asks for, each to `depth` candidates within the filter.

    In hybrid mode the lexical search runs in a thread while the query is embedded and the
    vectors are scanned (SQLite and numpy release the GIL), so it adds no time of its own.
    """
    out = _Retrieval()
    lexical = None
    if mode == "hybrid":
        lexical = _pool().submit(_lexical, store, query, depth, f)
    if mode in ("hybrid", "dense"):
        t0 = time.perf_counter()
        vector, out.embedder, sparse = _embed(query, out, embedder_hint)
        t1 = time.perf_counter()
        out.index = index_for(out.embedder)
        out.lists["dense"] = _dense(out.index, vector, depth, f)
        t2 = time.perf_counter()
        out.timings.update(embed=_ms(t1 - t0), dense=_ms(t2 - t1))
        if sparse and mode == "hybrid":
            # BGE-M3's own lexical weights: a third list, from the same forward pass as the vector.
            out.lists["sparse"] = store.sparse_search(out.embedder, sparse, depth, filter=f)
            out.timings["sparse"] = _ms(time.perf_counter() - t2)
    t0 = time.perf_counter()
    if lexical is not None:
        out.lists["lexical"], out.timings["lexical"] = lexical.result()
        out.timings["lexical_wait"] = _ms(time.perf_counter() - t0)
    elif mode == "lexical":
        out.lists["lexical"], out.timings["lexical"] = _lexical(store, query, depth, f)
    return out


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads for lexical searches that overlap the query embedding (created on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lexical-search")
        return _executor


def _ranked(store, index_for, query: str, mode: str, wanted: int, f: SearchFilter, status: dict[str, dict],
            depth: int, notes: list[str]) -> tuple[_Retrieval, list, dict | None]:
    """Retrieve, fuse and (with depth > 0) rerank: the retrieval, the candidates, the rerank scores."""
    got = _retrieve(store, index_for, query, mode, max(wanted, FUSION_DEPTH) if mode == "hybrid" else wanted,
                    f, embedder_of(status))
    t0 = time.perf_counter()
    fused = fuse(got.lists) if mode == "hybrid" else next(iter(got.lists.values()))
    shown = wanted + 10  # a few spare for rows deleted since they were found
    weight = get_settings().search_topic_weight if mode == "hybrid" else 0.0
    if weight > 0:  # a topic's sections help each other from anywhere in the fused list
        shown = max(shown, FUSION_DEPTH)
    candidates = _candidates(store, fused[:shown])
    if weight > 0:
        candidates = topic_boost(candidates, weight)
    candidates = candidates[:wanted]
    t = got.timings
    t["fuse"] = _ms(time.perf_counter() - t0)
    # What retrieval adds after the query embedding: in hybrid mode the lexical search overlapped
    # the embedding and the vector scan, so only the wait for it still to finish counts.
    counted = ("dense", "sparse", "lexical_wait", "fuse") if mode == "hybrid" else ("dense", "lexical", "fuse")
    t["retrieve"] = round(sum(t.get(stage, 0.0) for stage in counted), 1)
    rerank_scores = None
    t0 = time.perf_counter()
    if depth and candidates:
        candidates, rerank_scores = _rerank(query, candidates, depth, notes)
    t["rerank"] = _ms(time.perf_counter() - t0)
    return got, candidates, rerank_scores


def search(
    store,
    index_for: Callable[[str], object],
    query: str,
    k: int = 10,
    rerank: bool = True,
    document_id: str | None = None,
    top_n: int | None = None,
    *,
    mode: str = "hybrid",
    include_kinds: frozenset[str] | set[str] = frozenset(),
    collections: list[str] | None = None,
    worker_status: Callable[[], dict[str, dict]] = client.worker_models,
    filter: SearchFilter | None = None,
    context: int = 0,
) -> SearchResult:
    """Top-k snippets for a query within a filter (collections, documents, kinds, pages, file names,
    upload dates): lexical, dense or both fused, reranked; each with `context` neighbours either side."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    k = max(1, min(int(k), MAX_K))
    context = max(0, min(int(context), MAX_CONTEXT))
    f = search_filter(filter, collections, document_id, include_kinds)
    notes: list[str] = []
    started = time.perf_counter()
    status = _read_status(worker_status)
    plan = rerank_plan(status, top_n)
    if rerank and plan.skip:
        notes.append(f"Reranking unavailable: {plan.skip}. Results are in retrieval order.")
        rerank = False
    wanted = max(k, plan.depth) if rerank else k
    # The model worker is asked to pause ingestion between this search's two tasks.
    with client.model_hold() if rerank or mode != "lexical" else contextlib.nullcontext():
        got, candidates, rerank_scores = _ranked(store, index_for, query, mode, wanted, f, status,
                                                 plan.depth if rerank else 0, notes)
    if got.index is not None:
        notes += _status_notes(store, got.index, got.embedder, status)
    elif not candidates and not store.list_documents():
        notes.append("No documents are indexed yet: upload a PDF first.")
    hits = _hits(store, candidates, k, rerank_scores, fusion.ranks(got.lists))
    if context:  # only for the hits returned, after the ranking is settled
        t0 = time.perf_counter()
        attach_neighbours(store, hits, context)
        got.timings["context"] = _ms(time.perf_counter() - t0)
    got.timings["total"] = _ms(time.perf_counter() - started)
    result = SearchResult(query, k, document_id, got.embedder, rerank_scores is not None, mode, hits, notes,
                          got.timings, None if f.collections is None else list(f.collections))
    result.filter = f
    result.reranked_count = len(rerank_scores or ())
    result.rerank_depth = plan.depth if rerank else 0
    result.query_cached = got.cached
    result.context = context
    return result


def search_filter(f: SearchFilter | None, collections: list[str] | None = None, document_id: str | None = None,
                  include_kinds: frozenset[str] | set[str] = frozenset()) -> SearchFilter:
    """The filter a search applies: the one given, narrowed to the collections and document named,
    leaving out the kinds hidden by default (tables of contents) unless they are asked for."""
    f = f or SearchFilter()
    if collections is not None:
        cols = tuple(c for c in collections if f.collections is None or c in f.collections)
        f = replace(f, collections=cols)
    hidden = EXCLUDED_KINDS - set(include_kinds) - set(f.kinds or ())
    f = replace(f, exclude_kinds=tuple(sorted(set(f.exclude_kinds) | hidden)))
    return f.within_document(document_id)


def _read_status(worker_status: Callable[[], dict[str, dict]]) -> dict[str, dict]:
    """The model workers' status, or {} when it cannot be read (it only tunes the search)."""
    try:
        return worker_status() or {}
    except Exception:
        log.warning("could not read the worker model status", exc_info=True)
        return {}


def fuse(lists: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The retrievers' lists as one ranking, by the configured fusion (see bench/DEVSET.md)."""
    if get_settings().search_fusion == "rrf":
        return fusion.rrf(lists)
    return fusion.weighted(lists, FUSION_WEIGHTS)


def _unindexed(store, embedder: str) -> str:
    """How many snippets lack a vector from this embedder ("" if none), from counts the store keeps."""
    n = store.unindexed_count(embedder)
    return str(n) if n else ""


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
