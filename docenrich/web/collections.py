"""The collections API under /api/collections: list, create, show, export, delete, membership."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request

from docenrich.records import Collection
from docenrich.storage import check_collection_name
from docenrich.web.auth import authenticate_api
from docenrich.web.errors import ApiError
from docenrich.web.exports import export_response
from docenrich.web.params import get_doc, store
from docenrich.web.presenters import collection_json, doc_json

log = logging.getLogger(__name__)

collections = Blueprint("collections", __name__, url_prefix="/api/collections")
collections.before_request(authenticate_api)


def get_collection(name: str) -> Collection:
    """The collection, or a 404 ApiError."""
    found = store().get_collection(name)
    if found is None:
        raise ApiError(404, f"There is no collection named {name!r}.", "not_found")
    return found


@collections.get("")
def list_collections():
    """Every collection with its document and snippet counts."""
    return jsonify(collections=[collection_json(c) for c in store().list_collections()])


@collections.post("")
def create_collection():
    """Create a collection from JSON or a form: name, description (201; 200 when it exists)."""
    body = request.get_json(silent=True) if request.is_json else request.form
    body = body if isinstance(body, dict) or hasattr(body, "get") else {}
    try:
        name = check_collection_name(body.get("name"))
    except ValueError as exc:
        raise ApiError(400, str(exc), "bad_collection") from None
    found, created = store().create_collection(name, str(body.get("description") or ""))
    return jsonify(collection_json(found)), 201 if created else 200


@collections.get("/<name>")
def show_collection(name: str):
    """One collection with its documents, newest first."""
    found = get_collection(name)
    docs = [doc_json(d) for d in store().list_documents([found.name])]
    return jsonify({**collection_json(found), "document_list": docs})


@collections.delete("/<name>")
def delete_collection(name: str):
    """Delete a collection with its documents, except those that also belong to another collection."""
    get_collection(name)
    deleted = store().delete_collection(name)
    if deleted is None:
        raise ApiError(404, f"There is no collection named {name!r}.", "not_found")
    return jsonify(deleted=name, documents_deleted=deleted)


@collections.get("/<name>/export")
def export_collection(name: str):
    """Every snippet of a collection's documents with its vector, as JSONL or Parquet, streamed."""
    found = get_collection(name)
    return export_response(store().collection_export_rows(found.name), found.name, request.args.get("format", "jsonl"))


@collections.put("/<name>/documents/<doc_id>")
def add_document(name: str, doc_id: str):
    """Put a stored document into a collection (created if new)."""
    get_doc(doc_id)
    try:
        store().add_to_collections(doc_id, [name])
    except ValueError as exc:
        raise ApiError(400, str(exc), "bad_collection") from None
    return jsonify(collection=name, document=doc_id, collections=store().collections_of([doc_id])[doc_id])


@collections.delete("/<name>/documents/<doc_id>")
def remove_document(name: str, doc_id: str):
    """Take a document out of a collection; the document itself stays."""
    get_collection(name)
    get_doc(doc_id)
    if not store().remove_from_collection(doc_id, name):
        raise ApiError(404, f"That document is not in the collection {name!r}.", "not_found")
    return jsonify(collection=name, document=doc_id, collections=store().collections_of([doc_id])[doc_id])
