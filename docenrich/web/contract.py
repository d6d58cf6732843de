"""The JSON bodies the API answers with, defined once as TypedDicts.

The presenters are annotated to return these types, and `components()` derives the OpenAPI
component schemas from the same annotations: a field is added, renamed or retyped here and
both follow. TypedDicts rather than dataclasses or hand-written JSON Schema because the
presenters keep building plain dicts (nothing is converted or copied on the search path), a
type checker sees a misspelt or missing key, and the annotations say everything the schema
needs: `NotRequired` for keys that are not always present, `X | None` for nullable values,
`Literal` for enumerations, and `Annotated[T, describe(...)]` for descriptions and bounds.

Every object is closed (`additionalProperties: false`) except the open maps typed `dict`, so a
key a presenter adds without adding it here fails the tests that check live answers against
the served description.
"""
from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, NotRequired, TypedDict, Union

from docenrich.context import MAX_CONTEXT

# --------------------------------------------------------------------------- building blocks


def describe(text: str = "", **keywords: Any) -> dict:
    """Schema keywords for `Annotated`: a description and any others (bounds, lengths)."""
    return {**({"description": text} if text else {}), **keywords}


State = Literal["queued", "extracting", "embedding", "ready", "failed", "cancelled"]
Mode = Literal["hybrid", "dense", "lexical"]
TaskState = Literal["PENDING", "PROGRESS", "SUCCESS", "FAILURE", "REVOKED"]
Box = Annotated[list[float] | None, describe("x0, y0, x1, y1 in PDF points, origin top left.",
                                             minItems=4, maxItems=4)]
Timestamp = Annotated[float, describe("Seconds since the epoch.")]


# --------------------------------------------------------------------------- errors


class FileError(TypedDict):
    """One file of an upload that was refused, and why."""

    filename: str
    error: str
    code: str
    status: Annotated[int, describe("The HTTP status this file alone would have been answered with.")]


class Error(TypedDict):
    """The JSON body of every error."""

    error: Annotated[str, describe("What went wrong, in words for a person.")]
    code: Annotated[str, describe("A short machine-readable reason, e.g. `not_found`.")]
    errors: NotRequired[Annotated[list[FileError],
                                  describe("Per-file refusals of an upload where none was accepted.")]]


# --------------------------------------------------------------------------- documents and snippets


class Document(TypedDict):
    """A document and its processing status."""

    id: Annotated[str, describe("16 hex digits, from the PDF's content.")]
    filename: str
    state: State
    stage: Annotated[str, describe("What the pipeline is doing now, in words.")]
    progress: Annotated[float, describe(minimum=0, maximum=1)]
    pages: int
    snippet_count: int
    error: Annotated[str | None, describe("Why processing failed; of a ready document, the pages it skipped.")]
    title: str
    has_text_layer: bool | None
    size: Annotated[int, describe("Bytes.")]
    embedder: Annotated[str | None, describe("The model whose vectors the snippets carry.")]
    created_at: Timestamp
    updated_at: Timestamp
    notes: Annotated[list[str], describe("Of a ready document: pages that could not be processed, and why.")]
    url: Annotated[str, describe("The document's page.")]
    collections: NotRequired[Annotated[list[str], describe(
        "The collections it belongs to (not listed inside a collection's `document_list`).")]]


class UploadedDocument(Document):
    """A document an upload accepted."""

    duplicate: Annotated[bool, describe("The same PDF was stored already; nothing new was queued.")]
    task_id: NotRequired[Annotated[str, describe("The task that processes it, when the upload queued it: "
                                                 "poll /api/tasks/{task_id}.")]]


class Snippet(TypedDict):
    """A snippet of a document: its text, where it sits on the page, and its image."""

    id: int
    document_id: str
    ordinal: Annotated[int, describe("Its place in the document's reading order.")]
    page: int
    bbox: Box
    kind: Annotated[str, describe("e.g. `text`, `table`, `figure`, `page`, `toc`.")]
    text: str
    meta: Annotated[dict[str, Any], describe("What extraction knows besides the text: heading path, title, ...")]
    has_vector: bool
    image_url: Annotated[str | None, describe("Its region image, when it has one.")]
    cited_url: Annotated[str, describe("The page it comes from, drawn large with the snippet marked.")]


class DocumentList(TypedDict):
    """Documents, newest first."""

    documents: list[Document]
    queued: Annotated[int, describe("How many of them are still being processed.")]


class UploadResult(TypedDict):
    """What an upload accepted and what it refused."""

    documents: list[UploadedDocument]
    errors: list[FileError]


class DocumentDeleted(TypedDict):
    """A document that is gone."""

    deleted: Annotated[str, describe("The document's id.")]


class SnippetPage(TypedDict):
    """A page of a document's snippets, in reading order."""

    total: Annotated[int, describe("The document's snippets in all.")]
    limit: int
    offset: int
    snippets: list[Snippet]


# --------------------------------------------------------------------------- search


class Neighbour(TypedDict):
    """A snippet next to a search result in its document's reading order."""

    snippet_id: int
    ordinal: Annotated[int, describe("Its place in the document's reading order.")]
    page: int
    kind: str
    text: str


class Hit(TypedDict):
    """A search result: the snippet, its document's name, and its scores."""

    rank: Annotated[int, describe("From 1, best first.")]
    snippet_id: int
    document_id: str
    ordinal: Annotated[int, describe("Its place in the document's reading order.")]
    filename: str | None
    title: str | None
    breadcrumb: Annotated[list[str],
                          describe("document title, then the heading path: chapter › section › topic")]
    page: int
    bbox: Box
    kind: str
    text: str
    score: Annotated[float, describe("The retrieval score (the same as vector_score).")]
    vector_score: Annotated[float,
                            describe("The retrieval score: cosine (dense), BM25 (lexical) or fused (hybrid).")]
    ranks: Annotated[dict[str, int], describe("Its rank in each retriever's list, by retriever (e.g. `dense`).")]
    rerank_score: float | None
    rerank_normalized: Annotated[float | None, describe("The rerank score scaled to 0..1.")]
    image_url: str | None
    cited_url: str
    context_before: Annotated[list[Neighbour], describe(
        "The snippets just before it in its document, in reading order (`context` of them at most; "
        "fewer at the document's start).")]
    context_after: Annotated[list[Neighbour], describe(
        "The snippets just after it in its document, in reading order (`context` of them at most; "
        "fewer at the document's end).")]


class SearchFilter(TypedDict):
    """The conditions a search was limited to; a condition that was not set is absent."""

    collections: NotRequired[list[str]]
    document_ids: NotRequired[list[str]]
    kinds: NotRequired[Annotated[list[str], describe("Snippet kinds.")]]
    page_from: NotRequired[Annotated[int, describe("First page, inclusive.")]]
    page_to: NotRequired[Annotated[int, describe("Last page, inclusive.")]]
    filename: NotRequired[Annotated[str, describe("A glob over file names: * and ?, case-insensitive.")]]
    uploaded_after: NotRequired[Annotated[str, describe("ISO 8601, UTC, inclusive.")]]
    uploaded_before: NotRequired[Annotated[str, describe("ISO 8601, UTC, exclusive.")]]


class SearchResponse(TypedDict):
    """A search: the query, what ranked it, notes, results and per-stage timings."""

    query: str
    k: int
    document_id: str | None
    collections: Annotated[list[str] | None, describe("The collections searched; null means all.")]
    filter: Annotated[SearchFilter, describe("What the search was limited to; empty when nothing.")]
    embedder: Annotated[str, describe("The model that embedded the query (empty in lexical mode).")]
    reranked: bool
    reranked_count: Annotated[int, describe("candidates the reranker scored")]
    rerank_depth: Annotated[int, describe("candidates it was asked to score at most (0: no rerank)")]
    query_cached: Annotated[bool, describe("the query vector came from the query cache")]
    mode: Mode
    context: Annotated[int, describe("Neighbours asked for on either side of each result.",
                                     minimum=0, maximum=MAX_CONTEXT)]
    notes: Annotated[list[str], describe("What a person should know about these results.")]
    results: Annotated[list[Hit], describe("Best first.")]
    timings_ms: Annotated[dict[str, float], describe("Milliseconds per stage: embed, dense, lexical, ..., total.")]


# --------------------------------------------------------------------------- collections


class Collection(TypedDict):
    """A named group of documents, with its counts."""

    name: str
    description: str
    created_at: Timestamp
    documents: int
    snippets: int
    url: Annotated[str, describe("The collection's page.")]


class CollectionDetail(Collection):
    """A collection with its documents, newest first."""

    document_list: list[Document]


class CollectionList(TypedDict):
    """Every collection."""

    collections: list[Collection]


class CollectionDeleted(TypedDict):
    """A collection that is gone, with the documents that went with it."""

    deleted: Annotated[str, describe("The collection's name.")]
    documents_deleted: Annotated[list[str], describe("Ids of its documents that belonged to no other collection.")]


class Membership(TypedDict):
    """A document's collections after it was put into or taken out of one."""

    collection: str
    document: str
    collections: list[str]


# --------------------------------------------------------------------------- tasks, status, health


class TaskMeta(TypedDict):
    """The document an ingestion task works on."""

    document: str
    state: State
    stage: str
    error: NotRequired[str | None]


class TaskStatus(TypedDict):
    """An ingestion task's state, read from its document."""

    task_id: str
    state: TaskState
    meta: TaskMeta


class RedisState(TypedDict):
    """Whether Redis answers."""

    ok: bool
    error: str | None


class WorkerState(TypedDict):
    """A worker: online, and the model it holds (model workers)."""

    name: str
    online: bool
    model_worker: bool
    resident: Annotated[str | None, describe("The kind of model on the device: embedder or reranker.")]
    model: str | None
    device: str | None
    host_cache: Annotated[list[str], describe("Model kinds kept in host memory.")]


class Minute(TypedDict):
    """What was ingested in one minute."""

    minute: Timestamp
    snippets: int
    pages: int
    documents: int


class Failure(TypedDict):
    """A document that failed."""

    id: str
    filename: str
    error: str
    at: Timestamp


class Status(TypedDict):
    """Workers, models, queues, ingestion over the last hour and recent failures."""

    redis: RedisState
    workers: list[WorkerState]
    queues: Annotated[dict[str, int], describe("Messages waiting, by queue.")]
    throughput: Annotated[list[Minute], describe("Oldest first.")]
    documents: Annotated[dict[str, int], describe("Documents by state.")]
    failures: Annotated[list[Failure], describe("Most recent first.")]
    generated_at: Timestamp


class Health(TypedDict):
    """Whether anything can work; without the token (when API_TOKEN is set) only `status`."""

    status: Literal["ok", "unavailable"]
    redis: NotRequired[RedisState]
    workers: NotRequired[Annotated[list[str], describe("Workers answering a ping.")]]
    models: NotRequired[Annotated[dict[str, Any], describe("Each model worker's models, by worker.")]]
    queues: NotRequired[Annotated[dict[str, int], describe("Messages waiting, by queue.")]]
    documents: NotRequired[Annotated[dict[str, int], describe("Documents by state, with `queued` and `total`.")]]


# --------------------------------------------------------------------------- schemas from the types

ROOTS = (Error, DocumentList, UploadResult, Document, DocumentDeleted, SnippetPage, SearchResponse,
         CollectionList, CollectionDetail, CollectionDeleted, Membership, TaskStatus, Status, Health)
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def ref(name: str) -> dict:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def is_model(tp: Any) -> bool:
    """Whether the annotation is one of the TypedDicts here."""
    return typing.is_typeddict(tp)


def schema(tp: Any) -> dict:
    """The JSON Schema of one annotation; TypedDicts become references to their components."""
    keywords: dict = {}
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        for extra in extras:
            keywords.update(extra)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if is_model(tp):
        out = ref(tp.__name__)
    elif tp is Any:
        out = {}
    elif tp in SCALARS:
        out = {"type": SCALARS[tp]}
    elif origin is Literal:
        out = {"type": "string", "enum": list(args)}
    elif origin is list:
        out = {"type": "array", "items": schema(args[0])}
    elif origin is dict or tp is dict:
        value = args[1] if args else Any
        out = {"type": "object"} if value is Any else {"type": "object", "additionalProperties": schema(value)}
    elif origin in (Union, types.UnionType) and type(None) in args and len(args) == 2:
        out = nullable(schema(next(a for a in args if a is not type(None))))
    elif origin in (Union, types.UnionType):
        out = {"anyOf": [schema(a) for a in args]}
    else:
        raise TypeError(f"no JSON Schema for {tp!r}")
    return {**out, **keywords}


def nullable(inner: dict) -> dict:
    """The schema, or null."""
    if isinstance(inner.get("type"), str):
        out = {**inner, "type": [inner["type"], "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [inner, {"type": "null"}]}


def fields(model: Any) -> dict[str, tuple[Any, bool]]:
    """A model's keys in order: (annotation, always present)."""
    out = {}
    for name, tp in typing.get_type_hints(model, include_extras=True).items():
        optional = typing.get_origin(tp) is NotRequired
        out[name] = (typing.get_args(tp)[0] if optional else tp, not optional)
    return out


def component(model: Any) -> dict:
    """A model's object schema: every key typed, the always-present ones required, no others allowed."""
    keys = fields(model)
    out = {"type": "object", "description": (model.__doc__ or "").strip().splitlines()[0]}
    out["properties"] = {name: schema(tp) for name, (tp, _) in keys.items()}
    out["required"] = [name for name, (_, always) in keys.items() if always]
    out["additionalProperties"] = False
    return out


def models(roots: tuple = ROOTS) -> dict[str, Any]:
    """Every model reachable from the roots, by name."""
    found: dict[str, Any] = {}

    def visit(tp: Any) -> None:
        if is_model(tp):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            for annotation, _ in fields(tp).values():
                visit(annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    for root in roots:
        visit(root)
    return found


def components() -> dict[str, dict]:
    """The OpenAPI component schemas, one per model."""
    return {name: component(model) for name, model in sorted(models().items())}
