"""Semantic search: embed the query in the worker, exact top-k in memory, rerank in the worker."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import bge
from settings import get_settings
from store import Store, StoredSnippet, VectorIndex

log = logging.getLogger(__name__)

MAX_K = 100
UNINDEXED_CAP = 1000


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


def search(
    store: Store,
    index_for: Callable[[str], VectorIndex],
    query: str,
    k: int = 10,
    rerank: bool = True,
    document_id: str | None = None,
    top_n: int | None = None,
    *,
    worker_status: Callable[[], dict[str, dict]] = bge.worker_models,
    url_for_image: Callable[[StoredSnippet], str | None] = lambda snippet: None,
) -> dict:
    """Top-k snippets for a query, reranked when possible, with scores, notes and timings."""
    top_n = get_settings().search_rerank_top_n if top_n is None else top_n
    k = max(1, min(int(k), MAX_K))
    notes: list[str] = []
    started = time.perf_counter()

    vector, embedder = bge.embed_query(query)
    embedded = time.perf_counter()

    index = index_for(embedder)
    index.refresh()
    hits = index.search(vector, max(k, top_n) if rerank else k, document_id=document_id)
    found = {s.id: s for s in store.get_snippets([sid for sid, _ in hits])}
    # A snippet deleted between the index refresh and this read is simply left out.
    candidates = [(found[sid], score) for sid, score in hits if sid in found]
    retrieved = time.perf_counter()

    reranked, rerank_scores = False, None
    if rerank and candidates:
        pool = candidates[:top_n]
        try:
            ranked = bge.rerank(query, [s.text for s, _ in pool])
        except bge.RerankerUnavailable as exc:
            notes.append(f"Reranking unavailable: {exc}. Results are ordered by vector similarity.")
        else:
            reranked = True
            rerank_scores = {
                pool[i][0].id: (float(ranked.scores[i]), float(ranked.normalized[i])) for i in ranked.order
            }
            candidates = [pool[i] for i in ranked.order]
    reranked_at = time.perf_counter()

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
            "cannot be found; run `python reembed.py` to make them searchable."
        )
    elif not len(index):
        notes.append("No documents are indexed yet: upload a PDF first.")

    docs: dict = {}
    results = []
    for rank, (snip, score) in enumerate(candidates[:k], start=1):
        if snip.document_id not in docs:
            docs[snip.document_id] = store.get_document(snip.document_id)
        doc = docs[snip.document_id]
        rr = rerank_scores.get(snip.id) if rerank_scores else None
        results.append(
            {
                "rank": rank,
                "snippet_id": snip.id,
                "document_id": snip.document_id,
                "filename": doc.filename if doc else None,
                "title": doc.title if doc else None,
                "page": snip.page,
                "bbox": list(snip.bbox) if snip.bbox is not None else None,
                "kind": snip.kind,
                "text": snip.text,
                "vector_score": round(float(score), 6),
                "rerank_score": None if rr is None else round(rr[0], 6),
                "rerank_normalized": None if rr is None else round(rr[1], 6),
                "image_url": url_for_image(snip),
            }
        )
    done = time.perf_counter()
    return {
        "query": query,
        "k": k,
        "document_id": document_id,
        "embedder": embedder,
        "reranked": reranked,
        "notes": notes,
        "results": results,
        "timings_ms": {
            "embed": _ms(embedded - started),
            "retrieve": _ms(retrieved - embedded),
            "rerank": _ms(reranked_at - retrieved),
            "total": _ms(done - started),
        },
    }


_unindexed_cache: dict[tuple[int, str], tuple[tuple[int, int], str]] = {}


def _unindexed(store: Store, embedder: str) -> str:
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
