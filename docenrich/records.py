"""The records every room shares: Snippet, Document, StoredSnippet, and the document states.

Only the standard library is imported at module level; a Snippet's image and embedding are
pillow and numpy objects, handled through `docenrich.imaging`, imported when first touched.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# A document's life: queued → extracting → embedding → ready, or failed (or cancelled by a user)
# from any unfinished state. A re-upload (or a retry) starts it again at queued.
QUEUED, EXTRACTING, EMBEDDING, READY, FAILED, CANCELLED = (
    "queued", "extracting", "embedding", "ready", "failed", "cancelled")
STATES = (QUEUED, EXTRACTING, EMBEDDING, READY, FAILED, CANCELLED)
FINISHED_STATES = (READY, FAILED, CANCELLED)
# Finished without output: what a re-upload starts again as a new run.
RESTARTABLE_STATES = (FAILED, CANCELLED)
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({QUEUED, EXTRACTING, EMBEDDING, READY, FAILED, CANCELLED}),
    EXTRACTING: frozenset({EXTRACTING, EMBEDDING, READY, FAILED, CANCELLED}),
    EMBEDDING: frozenset({EXTRACTING, EMBEDDING, READY, FAILED, CANCELLED}),
    READY: frozenset({READY, QUEUED}),
    FAILED: frozenset({FAILED, QUEUED}),
    CANCELLED: frozenset({CANCELLED, QUEUED}),
}


def legal_transition(current: str, new: str) -> bool:
    """Whether a document may move from state `current` to state `new`."""
    return new in TRANSITIONS.get(current, frozenset())


def states_before(new: str) -> tuple[str, ...]:
    """The states from which a document may move to `new`."""
    return tuple(s for s in STATES if new in TRANSITIONS[s])


def _same_array(a, b) -> bool:
    import numpy as np

    return bool(np.array_equal(a, b))


# --------------------------------------------------------------------------- snippet

@dataclass(eq=False)
class Snippet:
    """One searchable piece of a document: text, its page region image, and where it came from."""

    text: str = ""
    image: Image.Image | None = None
    page: int = 1
    bbox: tuple[float, float, float, float] | None = None
    document_id: str | None = None
    ordinal: int = 0
    kind: str = "text"
    embedding: "np.ndarray | None" = None
    embedding_model: str | None = None
    meta: dict = field(default_factory=dict)
    sparse: dict[int, float] | None = None  # lexical weights {token id: weight} (BGE-M3)

    def image_bytes(self) -> tuple[bytes, str] | None:
        """The image encoded for transport as (bytes, format), encoded at most once."""
        encoded = self.__dict__.get("_encoded")
        if encoded is None:
            img = self.__dict__.get("_image")
            if img is None:
                return None
            from docenrich import imaging

            encoded = imaging.encode(img, self.kind)
            self.__dict__["_encoded"] = encoded
        return encoded

    @property
    def has_image(self) -> bool:
        """Whether the snippet has an image, without decoding one that arrived encoded."""
        return self.__dict__.get("_image") is not None or self.__dict__.get("_encoded") is not None

    def __getstate__(self) -> dict:
        # Pixels never travel: the image goes as its encoded bytes, decoded lazily.
        state = {k: v for k, v in self.__dict__.items() if k not in ("_image", "_encoded")}
        state["_encoded"] = self.image_bytes()
        if not state["meta"]:
            del state["meta"]
        if state.get("sparse") is None:
            state.pop("sparse", None)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state.setdefault("meta", {})
        state.setdefault("sparse", None)
        self.__dict__.update(state)
        self.__dict__["_image"] = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snippet):
            return NotImplemented
        simple = ("text", "page", "bbox", "document_id", "ordinal", "kind", "embedding_model", "meta")
        if any(getattr(self, k) != getattr(other, k) for k in simple):
            return False
        if (self.embedding is None) != (other.embedding is None):
            return False
        if self.embedding is not None and not _same_array(self.embedding, other.embedding):
            return False
        return self.image_bytes() == other.image_bytes()

    __hash__ = None  # mutable


def _get_image(self: Snippet) -> Image.Image | None:
    img = self.__dict__.get("_image")
    if img is None:
        encoded = self.__dict__.get("_encoded")
        if encoded is not None:
            from docenrich import imaging

            img = imaging.decode(*encoded)
            self.__dict__["_image"] = img
    return img


def _set_image(self: Snippet, value: Image.Image | None) -> None:
    from docenrich import imaging

    if value is not None and not imaging.is_image(value):
        raise TypeError(f"Snippet.image must be a PIL image or None, not {type(value).__name__}")
    self.__dict__["_image"] = value
    self.__dict__["_encoded"] = None


# Installed after @dataclass so the generated __init__ still accepts `image=`.
Snippet.image = property(_get_image, _set_image, doc="The snippet's region image (PIL), decoded lazily.")



# -------------------------------------------------------------------------- documents

@dataclass
class Document:
    """One uploaded PDF and its processing status."""

    id: str
    sha256: str
    filename: str
    size: int
    state: str
    stage: str
    progress: float
    pages: int
    title: str
    producer: str
    has_text_layer: bool | None
    error: str | None
    snippet_count: int
    batches_total: int | None
    batches_done: int
    embedder: str | None
    created_at: float
    updated_at: float
    metadata: dict = field(default_factory=dict)
    # The run this status belongs to (bumped when a failed document is started again), and
    # the page batch size fixed when the document was accepted (None: not fixed yet).
    generation: int = 0
    batch_pages: int | None = None

    @property
    def finished(self) -> bool:
        """True once the document is ready, failed or cancelled."""
        return self.state in FINISHED_STATES

    @property
    def notes(self) -> list[str]:
        """Of a ready document: the pages that could not be processed, and why (one line each)."""
        return self.error.splitlines() if self.state == READY and self.error else []

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)


DEFAULT_COLLECTION = "default"


@dataclass
class Collection:
    """A named group of documents, with how many documents and snippets it holds."""

    name: str
    description: str
    created_at: float
    documents: int = 0
    snippets: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)


@dataclass
class StoredSnippet:
    """A stored snippet row, for the API and the web page."""

    id: int
    document_id: str
    ordinal: int
    page: int
    bbox: tuple | None
    text: str
    kind: str
    meta: dict
    image_path: str | None
    has_vector: bool

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        d = asdict(self)
        d["bbox"] = list(self.bbox) if self.bbox is not None else None
        return d




def embedding_prefix(title: str | None, heading: str | None, text: str) -> str:
    """What leads a snippet's embedded text: its document title and section heading, when not in it."""
    parts = [p for p in (title, heading) if p and p not in text]
    return " › ".join(parts)


def embedding_text(snippet: Snippet) -> str:
    """The text a snippet is embedded as: its text (or figure caption), led by its title and heading."""
    meta = snippet.meta or {}
    text = snippet.text or meta.get("caption") or ""
    # A snippet that continues a section is found by its heading (and document) too.
    prefix = embedding_prefix(meta.get("title"), meta.get("heading"), text)
    return f"{prefix}\n{text}" if prefix else text
