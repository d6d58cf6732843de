"""Records into storable values, the same for every backend: document ids, JSON columns, vectors, and a
Snippet validated into the columns, image and vector that a backend then writes."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from docenrich.records import Snippet

# Image formats we accept from Snippet.image_bytes(), mapped to the file extension.
IMAGE_EXTS = {"webp": "webp", "png": "png", "jpeg": "jpg", "jpg": "jpg", "gif": "gif"}
# A stored image's name: its content hash and a known extension (never a path).
IMAGE_NAME = re.compile(r"[0-9a-f]{64}\.(?:webp|png|jpg|gif)")
MAX_KIND = 32
_DOC_ID = re.compile(r"[0-9a-f]{16}")


def doc_id_for(sha256: str) -> str:
    """The document id of a PDF with this content hash."""
    return sha256[:16]


def is_doc_id(value: Any) -> bool:
    """Whether value has the shape of a document id."""
    return isinstance(value, str) and _DOC_ID.fullmatch(value) is not None


def check_doc_id(doc_id: Any) -> str:
    """doc_id itself, or ValueError if it is not shaped like a document id."""
    if not is_doc_id(doc_id):
        raise ValueError(f"not a document id: {doc_id!r}")
    return doc_id


def json_dump(value: Any) -> str:
    """JSON text for a meta/metadata column (empty values become {})."""
    return json.dumps(value or {}, default=_json_default)


def _json_default(value: Any) -> Any:
    # numpy scalars/arrays (common in meta) keep their numbers; anything else becomes text.
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)


def json_load(text: str | None, default: Any) -> Any:
    """Parsed JSON column, or default when empty or unreadable."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def as_vector(value: Any, what: str) -> np.ndarray:
    """A finite 1-D little-endian float32 vector, or ValueError naming `what`."""
    vec = np.asarray(value, dtype=np.float32)
    if vec.ndim == 2 and vec.shape[0] == 1:
        vec = vec[0]
    if vec.ndim != 1 or vec.shape[0] == 0:
        raise ValueError(f"{what}: expected a 1-D vector, got shape {vec.shape}")
    if not np.isfinite(vec).all():
        raise ValueError(f"{what}: vector contains NaN or infinity")
    return np.ascontiguousarray(vec, dtype="<f4")


@dataclass
class Prepared:
    """A Snippet validated and encoded for storage."""

    ordinal: int
    columns: dict[str, Any]  # page, bbox, text, kind, meta and image (the image's content name)
    image_data: bytes | None
    vector: np.ndarray | None
    embedder: str | None
    sparse: list[tuple[int, float]] | None = None  # (token id, weight) from the same embedder


def prepare_snippet(doc_id: str, snip: Snippet, seen: set[int]) -> Prepared:
    """Validate one snippet of a batch (ordinals in `seen` are taken) and encode its parts."""
    ordinal = int(snip.ordinal)
    if ordinal in seen:
        raise ValueError(f"duplicate snippet ordinal {ordinal} in one batch")
    seen.add(ordinal)
    if snip.document_id not in (None, doc_id):
        raise ValueError(f"snippet {ordinal} belongs to document {snip.document_id}, not {doc_id}")
    page = int(snip.page)
    if page < 1:
        raise ValueError(f"snippet {ordinal}: page must be >= 1 (1-based), got {page}")
    image, image_data = _encode_image(snip, ordinal)
    vector, embedder = _encode_vector(snip, ordinal)
    columns = {"page": page, "bbox": _encode_bbox(snip.bbox, ordinal), "text": str(snip.text or ""),
               "kind": str(snip.kind or "text")[:MAX_KIND], "meta": json_dump(snip.meta), "image": image}
    return Prepared(ordinal, columns, image_data, vector, embedder,
                    _encode_sparse(snip, ordinal) if embedder else None)


def _encode_bbox(bbox: Any, ordinal: int) -> str | None:
    if bbox is None:
        return None
    box = [float(v) for v in bbox]
    if len(box) != 4:
        raise ValueError(f"snippet {ordinal}: bbox needs 4 numbers")
    return json.dumps(box)


def _encode_image(snip: Snippet, ordinal: int) -> tuple[str | None, bytes | None]:
    encoded = snip.image_bytes()
    if encoded is None:
        return None, None
    data, fmt = encoded
    return image_name(data, fmt, f"snippet {ordinal}"), bytes(data)


def image_name(data: bytes, fmt: str, what: str = "an image") -> str:
    """The content name an encoded image is stored under: its SHA-256 and its format's extension."""
    ext = IMAGE_EXTS.get(str(fmt).lower().lstrip("."))
    if ext is None:
        raise ValueError(f"{what}: unsupported image format {fmt!r}")
    return f"{hashlib.sha256(bytes(data)).hexdigest()}.{ext}"


def _encode_vector(snip: Snippet, ordinal: int) -> tuple[np.ndarray | None, str | None]:
    if snip.embedding is None:
        return None, None
    if not snip.embedding_model:
        raise ValueError(f"snippet {ordinal} has an embedding but no embedding_model")
    return as_vector(snip.embedding, f"snippet {ordinal}"), str(snip.embedding_model)


def _encode_sparse(snip: Snippet, ordinal: int) -> list[tuple[int, float]] | None:
    weights = getattr(snip, "sparse", None)
    if weights is None:
        return None
    if not isinstance(weights, dict):
        raise ValueError(f"snippet {ordinal}: sparse weights must be a dict of token id to weight")
    return positive_weights(weights)


def positive_weights(weights: dict) -> list[tuple[int, float]]:
    """Sparse weights as (token id, weight) pairs, those above zero only."""
    return [(int(t), float(w)) for t, w in weights.items() if float(w) > 0]


def thumb_key(doc_id: str, page: int, width: int | None) -> tuple[str, int, int]:
    """(document id, page, width; 0 for the default thumbnail) of a page rendering; ValueError if not valid."""
    check_doc_id(doc_id)
    page = int(page)
    if page < 1:
        raise ValueError(f"page must be >= 1, got {page}")
    if width is not None and int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return doc_id, page, 0 if width is None else int(width)

