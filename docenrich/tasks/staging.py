"""Extracted batches waiting for their vectors, kept in Redis by the docs worker.

Only the texts go to the model worker; the snippets themselves (with their region images)
wait here until the vectors come back, and the docs worker stores both together. The
format is JSON, not pickle, so nothing that reads Redis runs what it finds there.
"""
from __future__ import annotations

import base64
import json

from docenrich.keys import STAGED_KEY, STAGED_TTL
from docenrich.records import Snippet
from docenrich.tasks.base import redis_client



def _dump(snippet: Snippet) -> dict:
    encoded = snippet.image_bytes()
    return {
        "text": snippet.text,
        "page": snippet.page,
        "bbox": list(snippet.bbox) if snippet.bbox is not None else None,
        "document_id": snippet.document_id,
        "ordinal": snippet.ordinal,
        "kind": snippet.kind,
        "meta": snippet.meta,
        "image": None if encoded is None else [base64.b64encode(encoded[0]).decode("ascii"), encoded[1]],
    }


def _load(item: dict) -> Snippet:
    image = item.pop("image")
    bbox = item.pop("bbox")
    snippet = Snippet(**item, bbox=tuple(bbox) if bbox is not None else None)
    if image is not None:
        # Stays encoded: the store writes these bytes as they are.
        snippet.__dict__["_encoded"] = (base64.b64decode(image[0]), image[1])
    return snippet


def staged_key(doc_id: str, generation: int, batch_index: int) -> str:
    """The Redis key a batch is staged under."""
    return STAGED_KEY.format(doc_id=doc_id, generation=generation, batch_index=batch_index)


def stage(doc_id: str, generation: int, batch_index: int, snippets: list[Snippet]) -> None:
    """Keep a batch's snippets until its vectors arrive (a day at most)."""
    key = staged_key(doc_id, generation, batch_index)
    payload = json.dumps([_dump(s) for s in snippets], default=str)
    redis_client().set(key, payload, ex=STAGED_TTL)


def unstage(doc_id: str, generation: int, batch_index: int) -> list[Snippet] | None:
    """The staged snippets of a batch, or None when they are gone (expired or lost with Redis)."""
    raw = redis_client().get(staged_key(doc_id, generation, batch_index))
    if raw is None:
        return None
    return [_load(item) for item in json.loads(raw)]


def staged_texts(doc_id: str, generation: int, batch_index: int) -> list[str] | None:
    """The texts to embed of a staged batch, or None when it is not staged."""
    from docenrich.records import embedding_text

    snippets = unstage(doc_id, generation, batch_index)
    return None if snippets is None else [embedding_text(s) for s in snippets]


def drop(doc_id: str, generation: int, batch_index: int) -> None:
    """Forget a staged batch once it is stored."""
    redis_client().delete(staged_key(doc_id, generation, batch_index))
