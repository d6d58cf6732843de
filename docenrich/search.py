"""Semantic search: embed the query in the worker, exact top-k over the stored vectors, rerank
in the worker. Returns records; the web app and the command line present them."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from docenrich import client
from docenrich.config import get_settings
from docenrich.records import Document, StoredSnippet

log = logging.getLogger(__name__)

MAX_K = 100
UNINDEXED_CAP = 1000


@dataclass
class Hit:
    """One result: the snippet, its document, and its scores."""

    rank: int
    snippet: StoredSnippet
    document: Document | None
    vector_score: float
    rerank_score: float | None = None
    rerank_normalized: float | None = None


@dataclass
class SearchResult:
    """What a search found, with the notes a person should read and the time each stage took."""

    query: str
    k: int
    document_id: str | None
    embedder: str
    reranked: bool
    hits: list[Hit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    collections: list[str] | None = None


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


def _retrieve(store, index, vector, n: int, document_id: str | None,
              collections: list[str] | None) -> list[tuple[StoredSnippet, float]]:
    index.refresh()
    within = None if collections is None else store.collection_document_ids(collections)
    hits = index.search(vector, n, document_id=document_id, document_ids=within)
    found = {s.id: s for s in store.get_snippets([sid for sid, _ in hits])}
    # A snippet deleted between the index refresh and this read is simply left out.
    return [(found[sid], score) for sid, score in hits if sid in found]


def _rerank(query: str, candidates: list, top_n: int, notes: list[str]) -> tuple[list, dict | None]:
    """Candidates reordered by the reranker, with its scores by snippet id; unchanged without one."""
    pool = candidates[:top_n]
    try:
        ranked = client.rerank(query, [s.text for s, _ in pool])
    except client.RerankerUnavailable as exc:
        notes.append(f"Reranking unavailable: {exc}. Results are ordered by vector similarity.")
        return candidates, None
    scores = {pool[i][0].id: (float(ranked.scores[i]), float(ranked.normalized[i])) for i in ranked.order}
    return [pool[i] for i in ranked.order], scores


def _status_notes(store, index, embedder: str, worker_status: Callable[[], dict[str, dict]]) -> list[str]:
    notes = []
    try:
        note = fallback_note(worker_status(), embedder)
    except Exception:  # the status is a nicety; the search itself already succeeded
        log.warning("could not read the worker model status", exc_info=True)
        note = None
    if note:
        notes.append(note)
    if missing := _unindexed(store, embedder):
        notes.append(
            f"{missing} snippets have no vector from {embedder} (they were embedded with another model) and "
            "cannot be found; run `flask --app app docenrich reembed` to make them searchable."
        )
    elif not len(index):
        notes.append("No documents are indexed yet: upload a PDF first.")
    return notes


def _hits(store, candidates: list, k: int, rerank_scores: dict | None) -> list[Hit]:
    docs: dict[str, Document | None] = {}
    hits = []
    for rank, (snip, score) in enumerate(candidates[:k], start=1):
        if snip.document_id not in docs:
            docs[snip.document_id] = store.get_document(snip.document_id)
        rr = rerank_scores.get(snip.id) if rerank_scores else None
        hits.append(Hit(rank, snip, docs[snip.document_id], round(float(score), 6),
                        None if rr is None else round(rr[0], 6), None if rr is None else round(rr[1], 6)))
    return hits


def search(
    store,
    index_for: Callable[[str], object],
    query: str,
    k: int = 10,
    rerank: bool = True,
    document_id: str | None = None,
    top_n: int | None = None,
    *,
    collections: list[str] | None = None,
    worker_status: Callable[[], dict[str, dict]] = client.worker_models,
) -> SearchResult:
    """Top-k snippets for a query (in some collections, or all), reranked when possible, with notes and timings."""
    top_n = get_settings().search_rerank_top_n if top_n is None else top_n
    k = max(1, min(int(k), MAX_K))
    notes: list[str] = []
    started = time.perf_counter()
    vector, embedder = client.embed_query(query)
    embedded = time.perf_counter()
    index = index_for(embedder)
    candidates = _retrieve(store, index, vector, max(k, top_n) if rerank else k, document_id, collections)
    retrieved = time.perf_counter()
    rerank_scores = None
    if rerank and candidates:
        candidates, rerank_scores = _rerank(query, candidates, top_n, notes)
    reranked_at = time.perf_counter()
    notes += _status_notes(store, index, embedder, worker_status)
    hits = _hits(store, candidates, k, rerank_scores)
    done = time.perf_counter()
    timings = {"embed": _ms(embedded - started), "retrieve": _ms(retrieved - embedded),
               "rerank": _ms(reranked_at - retrieved), "total": _ms(done - started)}
    return SearchResult(query, k, document_id, embedder, rerank_scores is not None, hits, notes, timings,
                        collections)


_unindexed_cache: dict[tuple[int, str], tuple[tuple[int, int], str]] = {}


def _unindexed(store, embedder: str) -> str:
    """How many snippets lack a vector from this embedder ("" if none), recounted only when vectors change."""
    key, state = (id(store), embedder), store.vectors_state()
    cached = _unindexed_cache.get(key)
    if cached is None or cached[0] != state:
        n = len(store.snippets_needing_vectors(embedder, UNINDEXED_CAP + 1))
        text = "" if not n else f"More than {UNINDEXED_CAP}" if n > UNINDEXED_CAP else str(n)
        _unindexed_cache[key] = cached = (state, text)
    return cached[1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
