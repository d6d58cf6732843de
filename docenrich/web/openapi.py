"""The API described in OpenAPI 3.1 (`/api/openapi.json`) and a page that renders it (`/api/docs`).

Both are public: the description says what the API accepts, and holds no data.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, send_from_directory

from docenrich.web.openapi_paths import paths

openapi = Blueprint("openapi", __name__, url_prefix="/api")

VERSION = "0.2.0"


def error_schema() -> dict:
    """The JSON body of every error."""
    return {
        "type": "object",
        "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, in words for a person."},
            "code": {"type": "string", "description": "A short machine-readable reason, e.g. `not_found`."},
            "errors": {"type": "array", "description": "Per-file refusals of an upload where none was accepted.",
                       "items": {"$ref": "#/components/schemas/FileError"}},
        },
    }


def schemas() -> dict:
    """The shared object schemas."""
    string, number, integer = {"type": "string"}, {"type": "number"}, {"type": "integer"}
    nullable = lambda kind: {"type": [kind, "null"]}  # noqa: E731
    bbox = {"type": ["array", "null"], "items": number, "minItems": 4, "maxItems": 4,
            "description": "x0, y0, x1, y1 in PDF points, origin top left."}
    document = {
        "type": "object",
        "properties": {
            "id": string, "filename": string, "state": {"type": "string", "enum": ["queued", "extracting", "embedding", "ready", "failed", "cancelled"]},
            "stage": string, "progress": number, "pages": integer, "snippet_count": integer, "error": nullable("string"),
            "notes": {"type": "array", "items": string,
                      "description": "Of a ready document: pages that could not be processed, and why."},
            "title": string, "has_text_layer": nullable("boolean"), "size": integer, "embedder": nullable("string"),
            "created_at": number, "updated_at": number, "url": string,
            "collections": {"type": "array", "items": string}, "duplicate": {"type": "boolean"},
        },
    }
    snippet = {
        "type": "object",
        "properties": {
            "id": integer, "document_id": string, "ordinal": integer, "page": integer, "bbox": bbox, "kind": string,
            "text": string, "meta": {"type": "object"}, "has_vector": {"type": "boolean"},
            "image_url": nullable("string"), "cited_url": string,
        },
    }
    hit = {
        "type": "object",
        "properties": {
            "rank": integer, "snippet_id": integer, "document_id": string, "filename": nullable("string"),
            "title": nullable("string"), "page": integer, "bbox": bbox, "kind": string, "text": string,
            "breadcrumb": {"type": "array", "items": string,
                           "description": "document title, then the heading path: chapter › section › topic"},
            "vector_score": number, "rerank_score": nullable("number"), "rerank_normalized": nullable("number"),
            "image_url": nullable("string"), "cited_url": string,
        },
    }
    collection = {
        "type": "object",
        "properties": {"name": string, "description": string, "created_at": number, "documents": integer,
                       "snippets": integer, "url": string},
    }
    file_error = {"type": "object", "properties": {"filename": string, "error": string, "code": string, "status": integer}}
    return {"Error": error_schema(), "FileError": file_error, "Document": document, "Snippet": snippet,
            "Hit": hit, "Collection": collection}


def build_spec() -> dict:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "docenrich API",
            "version": VERSION,
            "description": "PDFs to searchable snippets: upload into collections, follow processing, search, export. "
                           "When API_TOKEN is set every route except this description needs `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The API_TOKEN setting, when one is set."}},
        },
    }


@openapi.get("/openapi.json")
def openapi_json():
    """This API's OpenAPI 3.1 description."""
    return jsonify(build_spec())


@openapi.get("/docs")
def docs_page():
    """A page that renders the OpenAPI description (no outside assets)."""
    return send_from_directory(current_app.static_folder, "api-docs.html", max_age=300)
