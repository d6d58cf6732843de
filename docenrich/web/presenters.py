"""How records look to the outside: one function per record type, used by the API and the pages.

Each returns one of the `contract` types, from which the OpenAPI description's schemas are
derived: a key added here must be added there, or the API's contract tests fail.
"""
from __future__ import annotations

from flask import url_for

from docenrich.context import breadcrumb
from docenrich.records import Collection, Document, StoredSnippet
from docenrich.search import Hit, SearchResult
from docenrich.web import contract

DOC_FIELDS = (
    "id", "filename", "state", "stage", "progress", "pages", "snippet_count", "error",
    "title", "has_text_layer", "size", "embedder", "created_at", "updated_at",
)


def doc_json(doc: Document) -> contract.Document:
    """The public fields of a document, with its page URL."""
    out: contract.Document = {name: getattr(doc, name) for name in DOC_FIELDS}
    out["notes"] = doc.notes
    out["url"] = url_for("pages.document", doc_id=doc.id)
    return out


def collection_json(found: Collection) -> contract.Collection:
    """A collection with its counts and its page URL."""
    return {**found.to_dict(), "url": url_for("pages.collection_page", name=found.name)}


def cited_url(snippet_id: int, document_id: str, page: int) -> str:
    """The page a snippet was cited from, drawn large with the snippet marked."""
    return url_for("pages.cited_page", doc_id=document_id, page=page, snippet=snippet_id)


def image_url(snip: StoredSnippet) -> str | None:
    """The snippet's image URL: versioned by content once drawn, plain while it is still to draw."""
    if not snip.image_path:
        # Drawn lazily: the first request renders it from the page and box.
        return url_for("api.snippet_image", snippet_id=snip.id) if snip.bbox or snip.kind == "page" else None
    # `v` names the image content, so a URL never changes meaning and can be cached for good.
    return url_for("api.snippet_image", snippet_id=snip.id, v=snip.image_path[:16])


def snippet_json(snip: StoredSnippet) -> contract.Snippet:
    """A snippet as the API shows it, with its image URL."""
    return {
        "id": snip.id,
        "document_id": snip.document_id,
        "ordinal": snip.ordinal,
        "page": snip.page,
        "bbox": list(snip.bbox) if snip.bbox is not None else None,
        "kind": snip.kind,
        "text": snip.text,
        "meta": snip.meta,
        "has_vector": snip.has_vector,
        "image_url": image_url(snip),
        "cited_url": cited_url(snip.id, snip.document_id, snip.page),
    }


def neighbour_json(snip: StoredSnippet) -> contract.Neighbour:
    """A snippet shown next to a search result: where it sits and its text."""
    return {"snippet_id": snip.id, "ordinal": snip.ordinal, "page": snip.page, "kind": snip.kind, "text": snip.text}


def hit_json(hit: Hit) -> contract.Hit:
    """A search result: the snippet's fields, its document's name, and its scores."""
    snip = snippet_json(hit.snippet)
    return {
        "rank": hit.rank,
        "snippet_id": snip["id"],
        "document_id": snip["document_id"],
        "ordinal": snip["ordinal"],
        "filename": hit.document.filename if hit.document else None,
        "title": hit.document.title if hit.document else None,
        "breadcrumb": breadcrumb(hit.snippet, hit.document.title if hit.document else None),
        "page": snip["page"],
        "bbox": snip["bbox"],
        "kind": snip["kind"],
        "text": snip["text"],
        "score": hit.vector_score,
        "vector_score": hit.vector_score,
        "ranks": hit.sources,
        "rerank_score": hit.rerank_score,
        "rerank_normalized": hit.rerank_normalized,
        "image_url": snip["image_url"],
        "cited_url": snip["cited_url"],
        "context_before": [neighbour_json(s) for s in hit.before],
        "context_after": [neighbour_json(s) for s in hit.after],
    }


def search_json(result: SearchResult) -> contract.SearchResponse:
    """A search response: the query, what ranked it, notes, results and per-stage timings."""
    return {
        "query": result.query,
        "k": result.k,
        "document_id": result.document_id,
        "collections": result.collections,
        "filter": result.filter.describe() if result.filter is not None else {},
        "embedder": result.embedder,
        "reranked": result.reranked,
        "reranked_count": result.reranked_count,
        "rerank_depth": result.rerank_depth,
        "query_cached": result.query_cached,
        "mode": result.mode,
        "context": result.context,
        "notes": result.notes,
        "results": [hit_json(h) for h in result.hits],
        "timings_ms": result.timings_ms,
    }
