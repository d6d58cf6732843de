"""Query and form parameters shared by the API and the pages, checked once."""
from __future__ import annotations

from flask import current_app, request

from docenrich.filters import MAX_COLLECTIONS, SearchFilter, build_filter
from docenrich.records import Document
from docenrich.storage import check_collection_name
from docenrich.web.errors import ApiError

ALL_COLLECTIONS = ("", "*", "all")


def services():
    """The app's shared Services (store, vector indexes, status cache, metrics)."""
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


def collection_names(values: list[str]) -> list[str] | None:
    """Collection names from repeated or comma-separated values; None means all collections."""
    names = [part.strip() for value in values for part in value.split(",")]
    names = [n for n in names if n]
    if len(names) > MAX_COLLECTIONS:
        raise ApiError(400, f"At most {MAX_COLLECTIONS} collection names per request ({len(names)} given).",
                       "too_many_collections")
    if not names or any(n.lower() in ALL_COLLECTIONS for n in names):
        return None
    try:
        return list(dict.fromkeys(check_collection_name(n) for n in names))
    except ValueError as exc:
        raise ApiError(400, str(exc), "bad_collection") from None


def collection_arg() -> list[str] | None:
    """The `collection` parameter(s) of a query or form: names, or None for all collections."""
    return collection_names(request.values.getlist("collection"))


def list_arg(name: str) -> list[str] | None:
    """A repeated or comma-separated parameter as a list (None when absent)."""
    values = [part.strip() for value in request.args.getlist(name) for part in value.split(",")]
    values = [v for v in values if v]
    return values or None


def search_filter_arg(include: frozenset[str] = frozenset()) -> SearchFilter:
    """The search filter of a query: collection, document, kind, pages, filename, uploaded_after/before."""
    try:
        return build_filter(
            collections=collection_arg(), document_ids=list_arg("document"), kinds=list_arg("kind"),
            pages=request.args.get("pages"), filename=request.args.get("filename"),
            uploaded_after=request.args.get("uploaded_after"), uploaded_before=request.args.get("uploaded_before"),
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), "bad_filter") from None
