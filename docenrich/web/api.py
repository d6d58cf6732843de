"""The JSON API under /api: upload, list, delete, snippets, images, thumbnails, export, search, tasks.

Routes are thin: they check parameters, call the store or the search, and present records
through `presenters`. Errors are ApiError, answered as JSON by the app's error handlers.
"""
from __future__ import annotations

import json
import logging
import tempfile
from typing import Any

from celery.result import AsyncResult
from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    request,
    send_file,
    stream_with_context,
)

from docenrich import client, pdf
from docenrich.celery_app import celery_app
from docenrich.records import Document
from docenrich.search import MAX_K, MODES
from docenrich.storage import QueueFull, sanitize_filename
from docenrich.web.auth import authenticate_api
from docenrich.web.errors import ApiError
from docenrich.web.presenters import doc_json, search_json, snippet_json

log = logging.getLogger(__name__)

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(authenticate_api)

# PDFError.code -> HTTP status; every other code (encrypted, corrupt, empty) is 422.
PDF_STATUS = {"not_pdf": 415, "too_many_pages": 413, "too_large": 413}
IMAGE_TYPES = {"webp": "image/webp", "png": "image/png", "jpg": "image/jpeg", "gif": "image/gif"}
YEAR = 365 * 24 * 3600
# A thumbnail is 240 px wide; a page far taller than wide is drawn at most this tall.
THUMB_MAX_HEIGHT = 2000
# Parquet export: rows per row group, so a large document is never held in memory at once.
PARQUET_ROW_GROUP = 2000
TASK_OWNER_KEY = "docenrich:task-owner:{task_id}"


def services():
    """The app's shared Services (store, vector indexes, status cache)."""
    return current_app.extensions["docenrich"]


def store():
    """The app's store."""
    return services().store


def get_doc(doc_id: str) -> Document:
    """The document, or a 404 ApiError."""
    doc = store().get_document(doc_id)
    if doc is None:
        raise ApiError(404, f"There is no document with id {doc_id!r}; it may have been deleted.", "not_found")
    return doc


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within bounds, or a 400 ApiError."""
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"The parameter {name} must be a whole number.", "bad_parameter") from None
    if not low <= value <= high:
        raise ApiError(400, f"The parameter {name} must be between {low} and {high}.", "bad_parameter")
    return value


def flag_arg(name: str, default: bool = True) -> bool:
    """A yes/no query parameter."""
    raw = request.args.get(name)
    return default if raw in (None, "") else raw.lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------- documents


@api.post("/documents")
def upload():
    """Accept up to MAX_UPLOAD_FILES PDFs (multipart field `file`), store and queue each once."""
    files = [f for f in request.files.getlist("file") if f.filename or f.content_length]
    if not files:
        raise ApiError(400, "No file was uploaded; send each PDF in a multipart field named “file”.", "no_file")
    most = current_app.config["MAX_UPLOAD_FILES"]
    if len(files) > most:
        raise ApiError(413, f"Send at most {most} files per request.", "too_many_files")
    services().require_queue()
    accepted: list[dict] = []
    failures: list[tuple[str, ApiError]] = []
    for upload in files:
        name = sanitize_filename(upload.filename)
        try:
            doc, created, task_id = accept(upload, name)
        except ApiError as exc:
            failures.append((name, exc))
            continue
        accepted.append({**doc_json(doc), "duplicate": not created, **({"task_id": task_id} if task_id else {})})
    errors = [{"filename": n, "error": e.message, "code": e.code, "status": e.status} for n, e in failures]
    if not accepted:
        first = failures[0][1]
        raise ApiError(first.status, first.message, first.code, first.headers, errors=errors)
    return jsonify(documents=accepted, errors=errors), 202


def accept(upload, name: str) -> tuple[Document, bool, str | None]:
    """Validate one uploaded file, store it and queue it (once per distinct PDF); (doc, created, task id)."""
    limit_mb = current_app.config["MAX_UPLOAD_MB"]
    limit = current_app.config["MAX_UPLOAD_BYTES"]
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"{name} is larger than the upload limit of {limit_mb} MB.", "too_large")
    if not data:
        raise ApiError(422, f"{name} is empty.", "empty")
    try:
        info = pdf.inspect_pdf(data, max_bytes=limit, max_pages=current_app.config["MAX_PAGES"])
    except pdf.PDFError as exc:
        raise ApiError(PDF_STATUS.get(exc.code, 422), f"{name}: {exc.message}", exc.code) from None
    # The store counts and inserts in one database transaction, so the cap holds however many
    # web processes admit uploads at once. The page batch size is fixed here, once.
    try:
        doc, created = store().add_document(
            data, name, info, batch_pages=current_app.config["SNIPPET_BATCH_PAGES"],
            max_queued=current_app.config["MAX_QUEUED_DOCUMENTS"],
        )
    except QueueFull as exc:
        raise ApiError(429, f"{exc.waiting} documents are already waiting to be processed; try again in a minute.",
                       "queue_full", {"Retry-After": "60"}) from None
    if created:
        try:
            task_id = client.submit_document(doc.id, doc.generation)
        except Exception:
            # Failed, not queued: otherwise a retried upload would find it "queued" and never run it.
            store().update_document(doc.id, state="failed", stage="failed", error="Could not be queued; upload it again.")
            raise
        remember_task(task_id)
        log.info("queued document %s (%s)", doc.id, name)
        return doc, created, task_id
    return doc, created, None


@api.get("/documents")
def list_documents():
    """Every document, newest first, with how many are still being processed."""
    docs = store().list_documents()
    return jsonify(documents=[doc_json(d) for d in docs], queued=sum(not d.finished for d in docs))


@api.get("/documents/<doc_id>")
def get_document(doc_id: str):
    """One document's status."""
    return jsonify(doc_json(get_doc(doc_id)))


@api.delete("/documents/<doc_id>")
def delete_document(doc_id: str):
    """Delete a document with its snippets, vectors and files."""
    get_doc(doc_id)
    if not store().delete_document(doc_id):
        raise ApiError(404, f"There is no document with id {doc_id!r}.", "not_found")
    return jsonify(deleted=doc_id)


@api.get("/documents/<doc_id>/snippets")
def document_snippets(doc_id: str):
    """A page of a document's snippets (limit, offset)."""
    doc = get_doc(doc_id)
    limit, offset = int_arg("limit", 100, 1, 1000), int_arg("offset", 0, 0, 10**9)
    found = store().snippets(doc_id, limit=limit, offset=offset)
    return jsonify(total=doc.snippet_count, limit=limit, offset=offset, snippets=[snippet_json(s) for s in found])


@api.get("/snippets/<int:snippet_id>/image")
def snippet_image(snippet_id: int):
    """A snippet's region image, cached for good under its versioned URL."""
    snip = store().get_snippet(snippet_id)
    path = store().image_file(snip.image_path) if snip and snip.image_path else None
    if path is None:
        raise ApiError(404, "This snippet has no image.", "not_found")
    # Versioned URLs (?v=<content name>) never change meaning; bare ones may after a re-extraction.
    immutable = request.args.get("v") == snip.image_path[:16]
    response = send_file(path, mimetype=IMAGE_TYPES.get(path.suffix.lstrip("."), "application/octet-stream"),
                         max_age=YEAR if immutable else 300, conditional=True, etag=True)
    if immutable:
        response.cache_control.immutable = True
    return response


@api.get("/documents/<doc_id>/pages/<int:page>/thumbnail")
def page_thumbnail(doc_id: str, page: int):
    """A page thumbnail, rendered once and kept."""
    doc = get_doc(doc_id)
    if not 1 <= page <= max(doc.pages, 0):
        raise ApiError(404, f"{doc.filename} has no page {page}.", "not_found")
    path = store().thumb_path(doc_id, page)
    if not path.is_file():
        try:
            data = pdf.render_page_thumbnail(store().pdf_path(doc_id), page, width=240, max_height=THUMB_MAX_HEIGHT)
        except pdf.PDFError as exc:
            raise ApiError(422, f"Page {page} of {doc.filename} cannot be drawn: {exc}", exc.code) from None
        path = store().save_thumb(doc_id, page, data)
    # Document ids name the PDF's content, so a page's thumbnail never changes.
    return send_file(path, mimetype="image/png", max_age=7 * 24 * 3600, conditional=True, etag=True)


# --------------------------------------------------------------------------- export


@api.get("/documents/<doc_id>/export")
def export(doc_id: str):
    """A document's snippets and vectors as JSONL (streamed) or Parquet."""
    doc = get_doc(doc_id)
    fmt = request.args.get("format", "jsonl").lower()
    stem = doc.filename.rsplit(".", 1)[0] or doc.id
    if fmt == "jsonl":
        rows = store().export_rows(doc_id)
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        response = Response(stream_with_context(lines), mimetype="application/x-ndjson")
        return attachment(response, f"{stem}.jsonl")
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ApiError(415, "Parquet export needs the pyarrow package (pip install pyarrow); use format=jsonl.",
                           "pyarrow_missing") from None
        spool = write_parquet(pa, pq, store().export_rows(doc_id))
        return attachment(send_file(spool, mimetype="application/vnd.apache.parquet"), f"{stem}.parquet")
    raise ApiError(400, "Unknown export format; use format=jsonl or format=parquet.", "bad_parameter")


def write_parquet(pa, pq, rows) -> tempfile.SpooledTemporaryFile:
    """The rows as Parquet in a spooled file, written PARQUET_ROW_GROUP rows at a time."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    schema = parquet_schema(pa)
    with pq.ParquetWriter(spool, schema) as writer:
        group: list[dict] = []
        for row in rows:
            group.append({**row, "meta": json.dumps(row["meta"], ensure_ascii=False)})
            if len(group) >= PARQUET_ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group = []
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))
    spool.seek(0)
    return spool


def parquet_schema(pa):
    """The Parquet export's columns."""
    return pa.schema([
        ("document_id", pa.string()), ("snippet_id", pa.int64()), ("ordinal", pa.int64()), ("page", pa.int32()),
        ("bbox", pa.list_(pa.float64())), ("kind", pa.string()), ("text", pa.string()), ("meta", pa.string()),
        ("image", pa.string()), ("embedding", pa.list_(pa.float32())), ("embedder", pa.string()),
    ])


def attachment(response: Response, filename: str) -> Response:
    """The response as a download named filename (non-ASCII names included)."""
    from werkzeug.http import dump_options_header

    # filename* carries non-ASCII names; the plain one is a safe ASCII stand-in.
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    response.headers["Content-Disposition"] = dump_options_header(
        "attachment", {"filename": ascii_name, "filename*": f"UTF-8''{_quote(filename)}"}
    )
    return response


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


# --------------------------------------------------------------------------- search and tasks


@api.get("/search")
def search():
    """Search the snippets: q, k, rerank, document, mode (hybrid|dense|lexical), include (e.g. toc)."""
    q = request.args.get("q", "").strip()
    if not q:
        raise ApiError(400, "Type something to search for (parameter q).", "empty_query")
    if len(q) > 1000:
        raise ApiError(400, "The query is too long (at most 1000 characters).", "query_too_long")
    document_id = request.args.get("document") or None
    mode = request.args.get("mode") or None
    if mode is not None and mode not in MODES:
        raise ApiError(400, f"mode must be one of: {', '.join(MODES)}.", "bad_mode")
    include = frozenset(k.strip() for k in request.args.get("include", "").split(",") if k.strip())
    result = services().search(q, int_arg("k", 10, 1, MAX_K), flag_arg("rerank"), document_id, mode, include)
    return jsonify(search_json(result))


def remember_task(task_id: str) -> None:
    """Record that this task was started through the API, for as long as results are kept."""
    key = TASK_OWNER_KEY.format(task_id=task_id)
    services().redis.set(key, "api", ex=int(current_app.config["RESULT_EXPIRES"]))


@api.get("/tasks/<task_id>")
def task_status(task_id: str):
    """The state and JSON-safe result or progress of a task started through this API.

    Only tasks an upload started are shown, by the id (a random UUID) that only the uploader
    was given; with API_TOKEN set, only to callers holding the token. Any other id is a 404,
    so the results of searches, embeddings and other callers' work are never shown.
    """
    if not services().redis.exists(TASK_OWNER_KEY.format(task_id=task_id)):
        raise ApiError(404, "There is no task with this id that was started through the API.", "not_found")
    result = AsyncResult(task_id, app=celery_app)
    state, info = result.state, result.info
    if isinstance(info, BaseException):
        meta: Any = {"error": f"{type(info).__name__}: {info}"}
    elif state == "SUCCESS" or isinstance(info, dict):
        meta = jsonable(info)
    else:
        meta = None
    return jsonify(task_id=task_id, state=state, meta=meta)


def jsonable(value: Any) -> Any:
    """value if it survives JSON, else a short description (results may hold arrays or images)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return {"type": type(value).__name__}
