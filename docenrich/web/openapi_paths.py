"""The paths of the OpenAPI description: every /api route, its parameters and its responses."""
from __future__ import annotations

JSON = "application/json"


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(description: str, schema: dict | None = None, media: str = JSON) -> dict:
    """A success response."""
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


ERRORS = {
    "400": "A parameter is missing or wrong.",
    "401": "API_TOKEN is set and the request has no valid bearer token or session.",
    "403": "A browser request without the session's CSRF token.",
    "404": "No such document, snippet, page or collection.",
    "409": "The document has already finished (ready, failed or cancelled).",
    "413": "The upload is too large, has too many pages, or too many files.",
    "415": "The file is not a PDF (or Parquet export without pyarrow).",
    "422": "The PDF cannot be processed: encrypted, damaged or empty.",
    "429": "Too many documents are waiting; retry after the Retry-After header's seconds.",
    "500": "An unexpected server error; details are in the server log.",
    "503": "Redis or the model worker is unreachable, or the storage is unavailable.",
    "507": "The disk is full.",
}
COMMON = ("401", "500", "503")


def errors(*codes: str) -> dict:
    """Error responses: the listed ones plus those every route may give."""
    return {code: {"description": ERRORS[code], "content": {JSON: {"schema": ref("Error")}}}
            for code in sorted({*codes, *COMMON})}


def param(name: str, where: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    """One parameter."""
    return {"name": name, "in": where, "description": description, "required": required or where == "path",
            "schema": schema or {"type": "string"}}


DOC_ID = param("doc_id", "path", "A document id (16 hex digits, from the PDF's content).")
PAGE = param("page", "path", "A page number, from 1.", {"type": "integer", "minimum": 1})
NAME = param("name", "path", "A collection name.")
COLLECTION = param("collection", "query", "Collection name(s): repeat the parameter or separate with commas; "
                   "absent, empty or `all` means every collection.", {"type": "array", "items": {"type": "string"}})
FORMAT = param("format", "query", "Export format.", {"type": "string", "enum": ["jsonl", "parquet"], "default": "jsonl"})
EXPORT = {
    "200": {"description": "A download, streamed: one JSON object per line, or a Parquet file.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}},
}
PNG = {"200": {"description": "A PNG image.", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}


def op(summary: str, responses: dict, *params: dict, **extra) -> dict:
    """One operation; every one behind the token may also answer 401, 500 and 503."""
    if extra.get("security") != []:
        responses = {**errors(), **responses}
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
    listed = {"type": "object", "properties": {"documents": {"type": "array", "items": ref("Document")},
                                               "queued": {"type": "integer"}}}
    accepted = {"type": "object", "properties": {"documents": {"type": "array", "items": ref("Document")},
                                                 "errors": {"type": "array", "items": ref("FileError")}}}
    snippets = {"type": "object", "properties": {"total": {"type": "integer"}, "limit": {"type": "integer"},
                                                 "offset": {"type": "integer"},
                                                 "snippets": {"type": "array", "items": ref("Snippet")}}}
    return {
        "/api/documents": {
            "get": op("List documents, newest first", {"200": ok("The documents.", listed), **errors("400")}, COLLECTION),
            "post": op("Upload PDFs", {"202": ok("Accepted (stored and queued, or already present).", accepted),
                                       **errors("400", "403", "413", "415", "422", "429", "507")},
                       COLLECTION, requestBody=upload_body),
        },
        "/api/documents/{doc_id}": {
            "get": op("A document's status", {"200": ok("The document.", ref("Document")), **errors("404")}, DOC_ID),
            "delete": op("Delete a document", {"200": ok("Deleted."), **errors("403", "404")}, DOC_ID),
        },
        "/api/documents/{doc_id}/cancel": {"post": op(
            "Cancel a document's ingestion: its queued work is revoked, running work stops at the next batch, "
            "and nothing of it stays searchable; upload it again to start over",
            {"200": ok("The cancelled document.", ref("Document")), **errors("403", "404", "409")}, DOC_ID)},
        "/api/documents/{doc_id}/snippets": {"get": op(
            "A document's snippets in reading order", {"200": ok("Snippets.", snippets), **errors("400", "404")},
            DOC_ID, param("limit", "query", "At most this many.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            param("offset", "query", "Skip this many.", {"type": "integer", "minimum": 0}),
            param("page", "query", "Only the snippets of this page.", {"type": "integer", "minimum": 1}))},
        "/api/documents/{doc_id}/pages/{page}/thumbnail": {"get": op(
            "A page thumbnail, 240 px wide", {**PNG, **errors("404", "422")}, DOC_ID, PAGE)},
        "/api/documents/{doc_id}/pages/{page}/image": {"get": op(
            "A page rendered large (bounded in size)", {**PNG, **errors("400", "404", "422")}, DOC_ID, PAGE,
            param("width", "query", "Width in pixels, rounded to 100.", {"type": "integer", "minimum": 200,
                                                                          "maximum": 2000, "default": 1200}))},
        "/api/documents/{doc_id}/export": {"get": op(
            "Export a document's snippets and vectors", {**EXPORT, **errors("400", "404", "415")}, DOC_ID, FORMAT)},
        "/api/snippets/{snippet_id}/image": {"get": op(
            "A snippet's region image", {"200": {"description": "The image.", "content": {
                "image/*": {"schema": {"type": "string", "format": "binary"}}}}, **errors("404")},
            param("snippet_id", "path", "A snippet id.", {"type": "integer"}),
            param("v", "query", "Version tag from image_url; makes the response cacheable for good."))},
    }


def other_paths() -> dict:
    result = {"type": "object", "properties": {
        "query": {"type": "string"}, "k": {"type": "integer"}, "document_id": {"type": ["string", "null"]},
        "collections": {"type": ["array", "null"], "items": {"type": "string"}},
        "embedder": {"type": "string"}, "reranked": {"type": "boolean"},
        "reranked_count": {"type": "integer", "description": "candidates the reranker scored"},
        "rerank_depth": {"type": "integer", "description": "candidates it was asked to score at most (0: no rerank)"},
        "query_cached": {"type": "boolean", "description": "the query vector came from the query cache"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "results": {"type": "array", "items": ref("Hit")},
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}}}}
    return {
        "/api/search": {"get": op(
            "Search snippets by meaning", {"200": ok("Results, best first.", result), **errors("400", "404")},
            param("q", "query", "The question or phrase (1 to 1000 characters).", required=True),
            param("k", "query", "How many results.", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}),
            param("rerank", "query", "Rerank the candidates (when a reranker exists).", {"type": "boolean", "default": True}),
            param("document", "query", "Only this document."), COLLECTION)},
        "/api/tasks/{task_id}": {"get": op(
            "A worker task's state", {"200": ok("State and result or progress.")},
            param("task_id", "path", "A Celery task id."))},
        "/api/status": {"get": op("Workers, models, queues, ingestion over the last hour, recent failures",
                                  {"200": ok("The status.")})},
        "/api/openapi.json": {"get": op("This description", {"200": ok("OpenAPI 3.1.")}, security=[])},
        "/api/docs": {"get": op("This description as a page", {"200": {"description": "HTML.", "content": {
            "text/html": {"schema": {"type": "string"}}}}}, security=[])},
    }


def collections_paths() -> dict:
    listed = {"type": "object", "properties": {"collections": {"type": "array", "items": ref("Collection")}}}
    body = {"required": True, "content": {JSON: {"schema": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "maxLength": 64}, "description": {"type": "string"}}}}}}
    membership = {"type": "object", "properties": {"collection": {"type": "string"}, "document": {"type": "string"},
                                                   "collections": {"type": "array", "items": {"type": "string"}}}}
    shown = {"allOf": [ref("Collection"), {"type": "object", "properties": {
        "document_list": {"type": "array", "items": ref("Document")}}}]}
    deleted = {"type": "object", "properties": {"deleted": {"type": "string"},
                                                "documents_deleted": {"type": "array", "items": {"type": "string"}}}}
    return {
        "/api/collections": {
            "get": op("List collections with their counts", {"200": ok("The collections.", listed)}),
            "post": op("Create a collection", {"201": ok("Created.", ref("Collection")),
                                               "200": ok("It existed already.", ref("Collection")),
                                               **errors("400", "403")}, requestBody=body),
        },
        "/api/collections/{name}": {
            "get": op("A collection and its documents", {"200": ok("The collection.", shown), **errors("404")}, NAME),
            "delete": op("Delete a collection with its documents that belong to no other collection",
                         {"200": ok("Deleted.", deleted), **errors("403", "404")}, NAME),
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
    """Every /api path."""
    return {**documents_paths(), **collections_paths(), **other_paths()}
