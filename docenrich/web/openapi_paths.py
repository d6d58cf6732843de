"""The paths of the OpenAPI description: every /api route, its parameters and its responses.

Response bodies are references to the component schemas that `contract` derives from the
presenters' types; nothing here describes a body's fields.
"""
from __future__ import annotations

from docenrich.context import MAX_CONTEXT
from docenrich.web.contract import ref

JSON = "application/json"


def ok(description: str, schema: dict, media: str = JSON) -> dict:
    """A success response."""
    return {"description": description, "content": {media: {"schema": schema}}}


ERRORS = {
    "400": "A parameter is missing or wrong, or the Host header names a host not served here.",
    "401": "API_TOKEN is set and the request has no valid bearer token or session.",
    "403": "A browser request without the session's CSRF token.",
    "404": "No such document, snippet, page, collection or task.",
    "409": "The document has already finished (ready, failed or cancelled).",
    "413": "The upload is too large, has too many pages, unpacks to too much, or too many files.",
    "415": "The file's format is not supported, or its converter is not installed (or Parquet export without "
           "pyarrow).",
    "422": "The file cannot be processed: encrypted, damaged or empty.",
    "429": "Too many documents are waiting; retry after the Retry-After header's seconds.",
    "500": "An unexpected server error; details are in the server log.",
    "503": "Redis or the model worker is unreachable, or the storage is unavailable.",
    "507": "The disk is full.",
}
# What any route behind the token may answer: a Host not served, no token, a bug, Redis or the
# storage away, a full disk.
COMMON = ("400", "401", "500", "503", "507")
# What a public route (no token needed) may answer: a Host not served, a bug.
PUBLIC = ("400", "500")


def errors(*codes: str, common: tuple[str, ...] = COMMON) -> dict:
    """Error responses: the listed ones plus those every route may give."""
    return {code: {"description": ERRORS[code], "content": {JSON: {"schema": ref("Error")}}}
            for code in sorted({*codes, *common})}


def param(name: str, where: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    """One parameter."""
    return {"name": name, "in": where, "description": description, "required": required or where == "path",
            "schema": schema or {"type": "string"}}


DOC_ID = param("doc_id", "path", "A document id (16 hex digits, from the PDF's content).")
PAGE = param("page", "path", "A page number, from 1.", {"type": "integer", "minimum": 1})
NAME = param("name", "path", "A collection name.")
COLLECTION = param("collection", "query", "Collection name(s): repeat the parameter or separate with commas; "
                   "absent, empty or `all` means every collection.", {"type": "array", "items": {"type": "string"}})
# The search filter: applied inside every retriever, never to a top N afterwards.
STRINGS = {"type": "array", "items": {"type": "string"}}
SEARCH_FILTER = (
    param("collection", "query", "Only these collections (at most 20): repeat the parameter or separate with "
          "commas; absent, empty or `all` means every collection.", STRINGS),
    param("document", "query", "Only these document ids (at most 100): repeat or separate with commas.", STRINGS),
    param("kind", "query", "Only snippets of these kinds (text, table, figure, toc, page): repeat or separate "
          "with commas.", STRINGS),
    param("pages", "query", "Only these pages: `5`, `5-9`, `5-` or `-9` (1-based, inclusive)."),
    param("filename", "query", "Only documents whose file name matches this glob (`*` and `?`, any case)."),
    param("uploaded_after", "query", "Only documents uploaded on or after this ISO date or date-time (UTC).",
          ),
    param("uploaded_before", "query", "Only documents uploaded before this ISO date-time; a date means up to its "
          "end."),
)
FORMAT = param("format", "query", "Export format.", {"type": "string", "enum": ["jsonl", "parquet"], "default": "jsonl"})
EXPORT = {
    "200": {"description": "A download, streamed: one JSON object per line, or a Parquet file.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}},
}
PNG = {"200": {"description": "A PNG image.", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}


def op(summary: str, responses: dict, *params: dict, **extra) -> dict:
    """One operation, with the errors every route may answer (COMMON behind the token, PUBLIC otherwise)."""
    responses = {**errors(common=PUBLIC if extra.get("security") == [] else COMMON), **responses}
    out = {"summary": summary, "responses": dict(sorted(responses.items())), **extra}
    if params:
        out["parameters"] = list(params)
    return out


def documents_paths() -> dict:
    upload_body = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                       "collection": {"type": "string", "description": "Put the files into this collection "
                                      "(created if new); without one they go to `default`."}}}}}}
    return {
        "/api/documents": {
            "get": op("List documents, newest first", {"200": ok("The documents.", ref("DocumentList")), **errors("400")}, COLLECTION),
            "post": op("Upload documents (PDF and the other formats of docs/formats.md)", {"202": ok("Accepted (stored and queued, or already present).", ref("UploadResult")),
                                       **errors("400", "403", "413", "415", "422", "429", "507")},
                       COLLECTION, requestBody=upload_body),
        },
        "/api/documents/{doc_id}": {
            "get": op("A document's status", {"200": ok("The document.", ref("Document")), **errors("404")}, DOC_ID),
            "delete": op("Delete a document", {"200": ok("Deleted.", ref("DocumentDeleted")), **errors("403", "404")},
                         DOC_ID),
        },
        "/api/documents/{doc_id}/cancel": {"post": op(
            "Cancel a document's ingestion: its queued work is revoked, running work stops at the next batch, "
            "and nothing of it stays searchable; upload it again to start over",
            {"200": ok("The cancelled document.", ref("Document")), **errors("403", "404", "409")}, DOC_ID)},
        "/api/documents/{doc_id}/snippets": {"get": op(
            "A document's snippets in reading order", {"200": ok("Snippets.", ref("SnippetPage")), **errors("400", "404")},
            DOC_ID, param("limit", "query", "At most this many.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            param("offset", "query", "Skip this many.", {"type": "integer", "minimum": 0}),
            param("page", "query", "Only the snippets of this page.", {"type": "integer", "minimum": 1}))},
        "/api/documents/{doc_id}/pages/{page}/thumbnail": {"get": op(
            "A page thumbnail, 240 px wide", {**PNG, **errors("404", "422")}, DOC_ID, PAGE)},
        "/api/documents/{doc_id}/pages/{page}/image": {"get": op(
            "A page rendered large (bounded in size)", {**PNG, **errors("400", "404", "422")}, DOC_ID, PAGE,
            param("width", "query", "Width in pixels, rounded to 100.", {"type": "integer", "minimum": 200,
                                                                          "maximum": 2000, "default": 1200}))},
        "/api/documents/{doc_id}/original": {"get": op(
            "The file as it was uploaded (PDF, DOCX, EPUB, HTML, ...), with its media type and file name",
            {"200": {"description": "The uploaded file.", "content": {
                "*/*": {"schema": {"type": "string", "format": "binary"}}}}, **errors("404")}, DOC_ID)},
        "/api/documents/{doc_id}/export": {"get": op(
            "Export a document's snippets and vectors", {**EXPORT, **errors("400", "404", "415")}, DOC_ID, FORMAT)},
        "/api/snippets/{snippet_id}/image": {"get": op(
            "A snippet's region image", {"200": {"description": "The image.", "content": {
                "image/*": {"schema": {"type": "string", "format": "binary"}}}}, **errors("404")},
            param("snippet_id", "path", "A snippet id.", {"type": "integer"}),
            param("v", "query", "Version tag from image_url; makes the response cacheable for good."))},
    }


def other_paths() -> dict:
    result = ref("SearchResponse")
    spec = {"type": "object", "required": ["openapi", "info", "paths", "components"]}
    return {
        "/api/search": {"get": op(
            "Search snippets by meaning", {"200": ok("Results, best first.", result), **errors("400", "404")},
            param("q", "query", "The question or phrase (1 to 1000 characters).", required=True),
            param("k", "query", "How many results.", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}),
            param("rerank", "query", "Rerank the candidates (when a reranker exists).", {"type": "boolean", "default": True}),
            param("mode", "query", "Which retrievers rank the snippets (default: the SEARCH_MODE setting).",
                  {"type": "string", "enum": ["hybrid", "dense", "lexical"]}),
            param("include", "query", "Kinds hidden by default to include, comma-separated (e.g. `toc`)."),
            param("context", "query", "Return this many neighbouring snippets before and after each result, "
                  "in reading order within its document (`context_before`, `context_after`).",
                  {"type": "integer", "minimum": 0, "maximum": MAX_CONTEXT, "default": 0}),
            *SEARCH_FILTER)},
        "/api/tasks/{task_id}": {"get": op(
            "An ingestion task's state", {"200": ok("Its state and its document's progress or error.",
                                                    ref("TaskStatus")), **errors("404")},
            param("task_id", "path", "A Celery task id."))},
        "/api/status": {"get": op("Workers, models, queues, ingestion over the last hour, recent failures",
                                  {"200": ok("The status.", ref("Status"))})},
        "/api/openapi.json": {"get": op("This description", {"200": ok("OpenAPI 3.1.", spec)}, security=[])},
        "/api/docs": {"get": op("This description as a page", {"200": {"description": "HTML.", "content": {
            "text/html": {"schema": {"type": "string"}}}}}, security=[])},
        "/healthz": {"get": op(
            "Redis, workers, models, queue backlog and document counts; with API_TOKEN set, a caller "
            "without the token learns only `status`", {"200": ok("Something can work.", ref("Health")),
                                                       "503": ok("Redis is unreachable or no worker answers.",
                                                                 ref("Health"))}, security=[])},
    }


def collections_paths() -> dict:
    body = {"required": True, "content": {JSON: {"schema": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "maxLength": 64}, "description": {"type": "string"}}}}}}
    membership = ref("Membership")
    return {
        "/api/collections": {
            "get": op("List collections with their counts", {"200": ok("The collections.", ref("CollectionList"))}),
            "post": op("Create a collection", {"201": ok("Created.", ref("Collection")),
                                               "200": ok("It existed already.", ref("Collection")),
                                               **errors("400", "403")}, requestBody=body),
        },
        "/api/collections/{name}": {
            "get": op("A collection and its documents", {"200": ok("The collection.", ref("CollectionDetail")), **errors("404")}, NAME),
            "delete": op("Delete a collection with its documents that belong to no other collection",
                         {"200": ok("Deleted.", ref("CollectionDeleted")), **errors("403", "404")}, NAME),
        },
        "/api/collections/{name}/export": {"get": op(
            "Export every snippet of a collection", {**EXPORT, **errors("400", "404", "415")}, NAME, FORMAT)},
        "/api/collections/{name}/documents/{doc_id}": {
            "put": op("Add a document to a collection", {"200": ok("Added.", membership), **errors("400", "403", "404")},
                      NAME, DOC_ID),
            "delete": op("Take a document out of a collection", {"200": ok("Removed.", membership),
                                                                 **errors("403", "404")}, NAME, DOC_ID),
        },
    }


def paths() -> dict:
    """Every /api path, and /healthz."""
    return {**documents_paths(), **collections_paths(), **other_paths()}
