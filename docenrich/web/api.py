"""The JSON API under /api: upload, list, delete, snippets, images, pages, export, search, tasks.

Routes are thin: they check parameters, call the store or the search, and present records
through `presenters`. Errors are ApiError, answered as JSON by the app's error handlers.
"""
from __future__ import annotations

import io
import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request, send_file

from docenrich import formats, lazy_images, pdf, uploads
from docenrich.context import MAX_CONTEXT
from docenrich.keys import TASK_OWNER_KEY, TASK_OWNER_TTL
from docenrich.records import Document
from docenrich.search import MAX_K, MODES
from docenrich.storage import renditions, sanitize_filename
from docenrich.uploads import Limits
from docenrich.web.auth import authenticate_api
from docenrich.web.errors import ApiError
from docenrich.web.exports import export_response
from docenrich.web.params import (
    collection_arg,
    flag_arg,
    get_doc,
    int_arg,
    search_filter_arg,
    services,
    store,
)
from docenrich.web.presenters import doc_json, search_json, snippet_json

log = logging.getLogger(__name__)

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(authenticate_api)

IMAGE_TYPES = {"webp": "image/webp", "png": "image/png", "jpg": "image/jpeg", "gif": "image/gif"}
YEAR = 365 * 24 * 3600
# A thumbnail is 240 px wide; a page far taller than wide is drawn at most this tall.
THUMB_MAX_HEIGHT = 2000
PAGE_WIDTHS = (200, 2000)


# --------------------------------------------------------------------------- documents


@api.post("/documents")
def upload():
    """Accept up to MAX_UPLOAD_FILES documents (multipart field `file`) into collections; store and queue each once."""
    files = [f for f in request.files.getlist("file") if f.filename or f.content_length]
    if not files:
        raise ApiError(400, "No file was uploaded; send each document in a multipart field named “file”.", "no_file")
    most = current_app.config["MAX_UPLOAD_FILES"]
    if len(files) > most:
        raise ApiError(413, f"Send at most {most} files per request.", "too_many_files")
    collections = collection_arg()
    services().require_queue()
    accepted: list[dict] = []
    failures: list[tuple[str, ApiError]] = []
    for upload in files:
        name = sanitize_filename(upload.filename)
        try:
            doc, created, task_id = accept(upload, name, collections)
        except ApiError as exc:
            services().metrics.refused(exc.code)
            failures.append((name, exc))
            continue
        accepted.append({**doc_json(doc), "duplicate": not created, **({"task_id": task_id} if task_id else {})})
    errors = [{"filename": n, "error": e.message, "code": e.code, "status": e.status} for n, e in failures]
    if not accepted:
        first = failures[0][1]
        raise ApiError(first.status, first.message, first.code, first.headers, errors=errors)
    with_collections(accepted)
    return jsonify(documents=accepted, errors=errors), 202


def accept(upload, name: str, collections: list[str] | None) -> tuple[Document, bool, str | None]:
    """Validate one uploaded file, store it in its collections and queue it (once per distinct PDF).

    Returns (doc, created, the id of the task that processes it when it was queued now).
    """
    limits = Limits.from_config(current_app.config)
    data = upload.stream.read(limits.max_bytes + 1)
    try:
        doc, created, task_id = uploads.admit(store(), data, name, limits, collections)
    except uploads.Refused as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        raise ApiError(exc.status, exc.message, exc.code, headers) from None
    if task_id:
        remember_task(task_id, doc.id)
    return doc, created, task_id


def with_collections(docs: list[dict]) -> list[dict]:
    """Add each presented document's collections (one query for all)."""
    found = store().collections_of(d["id"] for d in docs)
    for d in docs:
        d["collections"] = found.get(d["id"], [])
    return docs


@api.get("/documents")
def list_documents():
    """Every document (of some collections, or all), newest first, with how many are still being processed."""
    names = collection_arg()
    docs = store().list_documents() if names is None else store().list_documents(names)
    return jsonify(documents=with_collections([doc_json(d) for d in docs]), queued=sum(not d.finished for d in docs))


@api.get("/documents/<doc_id>")
def get_document(doc_id: str):
    """One document's status and collections."""
    return jsonify(with_collections([doc_json(get_doc(doc_id))])[0])


@api.post("/documents/<doc_id>/cancel")
def cancel_document(doc_id: str):
    """Stop a queued, extracting or embedding document: nothing of it stays searchable."""
    doc = get_doc(doc_id)
    if doc.finished:
        raise ApiError(409, f"The document is {doc.state}; only unfinished work can be cancelled.", "finished")
    cancelled = services().cancel(doc_id)
    if cancelled is None:  # it finished (or went away) meanwhile
        raise ApiError(409, "The document finished before it could be cancelled.", "finished")
    return jsonify(with_collections([doc_json(cancelled)])[0])


@api.delete("/documents/<doc_id>")
def delete_document(doc_id: str):
    """Delete a document with its snippets, vectors and files."""
    get_doc(doc_id)
    if not store().delete_document(doc_id):
        raise ApiError(404, f"There is no document with id {doc_id!r}.", "not_found")
    return jsonify(deleted=doc_id)


@api.get("/documents/<doc_id>/snippets")
def document_snippets(doc_id: str):
    """A page of a document's snippets (limit, offset), optionally of one PDF page."""
    doc = get_doc(doc_id)
    limit, offset = int_arg("limit", 100, 1, 1000), int_arg("offset", 0, 0, 10**9)
    page = int_arg("page", 0, 0, 10**6) or None
    found = store().snippets(doc_id, limit=limit, offset=offset, page=page)
    return jsonify(total=doc.snippet_count, limit=limit, offset=offset, snippets=[snippet_json(s) for s in found])


@api.get("/snippets/<int:snippet_id>/image")
def snippet_image(snippet_id: int):
    """A snippet's region image, cached for good under its versioned URL."""
    snip = store().get_snippet(snippet_id)
    if snip is not None and not snip.image_path:
        snip = _drawn(snip)
    data = store().image_bytes(snip.image_path) if snip and snip.image_path else None
    if data is None:
        raise ApiError(404, "This snippet has no image.", "not_found")
    # Versioned URLs (?v=<content name>) never change meaning; bare ones may after a re-extraction.
    immutable = request.args.get("v") == snip.image_path[:16]
    # The image's name is its content hash: the ETag of bytes from a file or a database row alike.
    response = send_file(io.BytesIO(data), mimetype=IMAGE_TYPES.get(snip.image_path.rsplit(".", 1)[-1],
                         "application/octet-stream"), max_age=YEAR if immutable else 300, conditional=True,
                         etag=snip.image_path, last_modified=None)
    if immutable:
        response.cache_control.immutable = True
    return response


def _drawn(snip):
    """The snippet with its region image drawn now (extraction leaves it for later)."""
    try:
        return lazy_images.draw_one(store(), snip)
    except (pdf.PDFError, KeyError) as exc:
        log.warning("snippet %s: its image could not be drawn: %s", snip.id, exc)
        return snip


@api.get("/documents/<doc_id>/pages/<int:page>/thumbnail")
def page_thumbnail(doc_id: str, page: int):
    """A page thumbnail, rendered once and kept."""
    return page_png(get_doc(doc_id), page, 240)


@api.get("/documents/<doc_id>/pages/<int:page>/image")
def page_image(doc_id: str, page: int):
    """A page rendered large (width in pixels, within bounds), rendered once per width and kept."""
    width = int_arg("width", 1200, PAGE_WIDTHS[0], PAGE_WIDTHS[1])
    # Widths are rounded to steps of 100 px so the cache holds a few renderings per page, not hundreds.
    return page_png(get_doc(doc_id), page, max(PAGE_WIDTHS[0], round(width, -2)))


def page_png(doc: Document, page: int, width: int):
    """One page as a PNG of about width pixels, from the cache or rendered now."""
    if not 1 <= page <= max(doc.pages, 0):
        raise ApiError(404, f"{doc.filename} has no page {page}.", "not_found")
    thumbnail = width == 240  # thumbnails keep their historical cache name
    cache_width = None if thumbnail else width
    data = store().thumb_bytes(doc.id, page, cache_width)
    if data is None:
        try:
            data = pdf.render_page_thumbnail(renditions.pdf_bytes(store(), doc.id), page, width=width,
                                             max_height=THUMB_MAX_HEIGHT if thumbnail else None)
        except pdf.PDFError as exc:
            raise ApiError(422, f"Page {page} of {doc.filename} cannot be drawn: {exc}", exc.code) from None
        store().save_thumb(doc.id, page, data, cache_width)
    # Document ids name the PDF's content, so a page's rendering never changes.
    return send_file(io.BytesIO(data), mimetype="image/png", max_age=7 * 24 * 3600, conditional=True,
                     etag=f"{doc.id}-p{page}-w{width}")


@api.get("/documents/<doc_id>/original")
def original(doc_id: str):
    """The file as it was uploaded, with its media type and file name (pages come from its PDF rendering)."""
    doc = get_doc(doc_id)
    try:
        data = store().pdf_bytes(doc.id)
    except KeyError:
        raise ApiError(404, f"The file of {doc.filename} is gone.", "not_found") from None
    # The id names the content, so the bytes under this URL never change.
    return send_file(io.BytesIO(data), mimetype=formats.media_type(doc.metadata), as_attachment=True,
                     download_name=doc.filename, max_age=7 * 24 * 3600, conditional=True, etag=f"{doc.id}-original")


# --------------------------------------------------------------------------- export


@api.get("/documents/<doc_id>/export")
def export(doc_id: str):
    """A document's snippets and vectors as JSONL or Parquet, streamed."""
    doc = get_doc(doc_id)
    stem = doc.filename.rsplit(".", 1)[0] or doc.id
    return export_response(store().export_rows(doc_id), stem, request.args.get("format", "jsonl"))


# --------------------------------------------------------------------------- search and tasks


@api.get("/search")
def search():
    """Search the snippets: q, k, rerank, mode (hybrid|dense|lexical), include (e.g. toc), context (0..5
    neighbours either side), and the filter: collection, document, kind, pages, filename, upload dates."""
    q = request.args.get("q", "").strip()
    if not q:
        raise ApiError(400, "Type something to search for (parameter q).", "empty_query")
    if len(q) > 1000:
        raise ApiError(400, "The query is too long (at most 1000 characters).", "query_too_long")
    mode = request.args.get("mode") or None
    if mode is not None and mode not in MODES:
        raise ApiError(400, f"mode must be one of: {', '.join(MODES)}.", "bad_mode")
    include = frozenset(k.strip() for k in request.args.get("include", "").split(",") if k.strip())
    f = search_filter_arg()
    document_id = f.document_ids[0] if f.document_ids and len(f.document_ids) == 1 else None
    result = services().search(q, int_arg("k", 10, 1, MAX_K), flag_arg("rerank"), document_id, mode, include,
                               filter=f, context=int_arg("context", 0, 0, MAX_CONTEXT))
    return jsonify(search_json(result))


def remember_task(task_id: str, doc_id: str) -> None:
    """Record that this task was started through the API for a document (kept while it is polled)."""
    services().redis.set(TASK_OWNER_KEY.format(task_id=task_id), doc_id, ex=TASK_OWNER_TTL)


# What a document's state means for the task an upload returned: pipeline tasks keep no
# results in Redis, so the document in the store is the task's record.
TASK_STATES = {"queued": "PENDING", "extracting": "PROGRESS", "embedding": "PROGRESS", "ready": "SUCCESS",
               "failed": "FAILURE", "cancelled": "REVOKED"}


@api.get("/tasks/<task_id>")
def task_status(task_id: str):
    """The state of the ingestion an upload started, with its document's progress or error.

    Only tasks an upload started are shown, by the id (a random UUID) that only the uploader
    was given; with API_TOKEN set, only to callers holding the token. Any other id is a 404,
    so the results of searches, embeddings and other callers' work are never shown.
    """
    key = TASK_OWNER_KEY.format(task_id=task_id)
    raw = services().redis.get(key)
    if raw:
        services().redis.expire(key, TASK_OWNER_TTL)  # kept while the uploader polls
    doc = store().get_document(raw.decode() if isinstance(raw, bytes) else raw) if raw else None
    if doc is None:
        raise ApiError(404, "There is no task with this id that was started through the API.", "not_found")
    state = TASK_STATES.get(doc.state, "PROGRESS")
    meta: dict[str, Any] = {"document": doc.id, "state": doc.state, "stage": doc.stage}
    if doc.state == "failed":
        meta["error"] = doc.error
    return jsonify(task_id=task_id, state=state, meta=meta)
