"""The API described in OpenAPI 3.1 (`/api/openapi.json`) and a page that renders it (`/api/docs`).

Both are public: the description says what the API accepts, and holds no data. The response
bodies' schemas come from `contract`, the same types the presenters return.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, send_from_directory

from docenrich.web.contract import components
from docenrich.web.openapi_paths import paths

openapi = Blueprint("openapi", __name__, url_prefix="/api")

VERSION = "0.2.0"


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
            "schemas": components(),
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
