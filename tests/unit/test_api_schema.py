"""The OpenAPI description without servers: a valid OpenAPI 3.1 document whose response schemas
are closed objects derived from the presenters' types, and presenters whose output matches them."""
from __future__ import annotations

import typing

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from docenrich.filters import SearchFilter
from docenrich.records import STATES, Collection, Document, StoredSnippet
from docenrich.search import MODES, Hit, SearchResult
from docenrich.web import contract, presenters
from docenrich.web.api import TASK_STATES, api
from docenrich.web.openapi import build_spec
from docenrich.web.pages import pages
from tests.api_contract import Contract, template_pattern

SPEC = build_spec()
SCHEMAS = SPEC["components"]["schemas"]


def refs(node) -> list[str]:
    """Every $ref under a node."""
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_description_is_valid_openapi_and_its_schemas_valid_json_schema():
    validate(SPEC)
    for name, schema in SCHEMAS.items():
        Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["description"], name
    for target in refs(SPEC):
        assert target.removeprefix("#/components/schemas/") in SCHEMAS, target


def test_response_objects_are_closed_and_say_what_is_always_there():
    for name, schema in SCHEMAS.items():
        assert schema["additionalProperties"] is False, name
        assert set(schema["required"]) <= set(schema["properties"]), name
    assert SCHEMAS["Hit"]["required"] == list(SCHEMAS["Hit"]["properties"])
    assert {"score", "ranks", "breadcrumb"} <= set(SCHEMAS["Hit"]["required"])
    assert "collections" not in SCHEMAS["Document"]["required"]
    assert SCHEMAS["Error"]["required"] == ["error", "code"]


def test_every_json_answer_of_every_operation_is_a_component():
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                for media, body in response.get("content", {}).items():
                    if media == "application/json" and path != "/api/openapi.json":
                        assert "$ref" in body["schema"], (path, method, status)


def test_enumerations_follow_the_code():
    properties = SCHEMAS["Document"]["properties"]
    assert tuple(properties["state"]["enum"]) == STATES
    assert tuple(SCHEMAS["SearchResponse"]["properties"]["mode"]["enum"]) == MODES
    assert set(SCHEMAS["TaskStatus"]["properties"]["state"]["enum"]) == set(TASK_STATES.values())
    assert set(typing.get_args(contract.State)) == set(TASK_STATES)


def test_schema_of_annotations():
    assert contract.schema(int | None) == {"type": ["integer", "null"]}
    assert contract.schema(list[contract.Hit]) == {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}
    assert contract.schema(contract.RedisState | None) == {
        "anyOf": [{"$ref": "#/components/schemas/RedisState"}, {"type": "null"}]}
    assert contract.schema(dict[str, float]) == {"type": "object", "additionalProperties": {"type": "number"}}
    assert contract.schema(typing.Literal["a", "b"] | None) == {"type": ["string", "null"], "enum": ["a", "b", None]}
    with pytest.raises(TypeError):
        contract.schema(set[str])


# --------------------------------------------------------------------------- presenters


@pytest.fixture(scope="module")
def context():
    app = Flask("presenters")
    app.register_blueprint(api)
    app.register_blueprint(pages)
    with app.test_request_context():
        yield


def document(**changes) -> Document:
    fields = dict(id="0123456789abcdef", sha256="0" * 64, filename="a.pdf", size=1234, state="ready", stage="done",
                  progress=1.0, pages=2, title="A title", producer="", has_text_layer=True,
                  error="page 2: no text", snippet_count=3, batches_total=1, batches_done=1, embedder="bundled",
                  created_at=1.5, updated_at=2.5)
    return Document(**{**fields, **changes})


def snippet(**changes) -> StoredSnippet:
    fields = dict(id=7, document_id="0123456789abcdef", ordinal=0, page=1, bbox=(1.0, 2.0, 3.0, 4.0),
                  text="Some text", kind="text", meta={"path": ["Chapter", "Section"]},
                  image_path="abcdef0123456789.webp", has_vector=True)
    return StoredSnippet(**{**fields, **changes})


def conforms(name: str, body: object) -> None:
    problems = Contract(SPEC).schema_problems({"$ref": f"#/components/schemas/{name}"}, body)
    assert not problems, problems


def test_presenters_return_what_the_components_describe(context):
    for doc in (document(), document(state="failed", error="broken", has_text_layer=None, embedder=None)):
        conforms("Document", presenters.doc_json(doc))
        conforms("Document", {**presenters.doc_json(doc), "collections": ["default"]})
        conforms("UploadedDocument", {**presenters.doc_json(doc), "duplicate": False, "task_id": "t"})
    for snip in (snippet(), snippet(bbox=None, image_path=None, kind="page", meta={})):
        conforms("Snippet", presenters.snippet_json(snip))
    conforms("Collection", presenters.collection_json(Collection("default", "", 1.0, 2, 3)))
    hits = [Hit(1, snippet(), document(), 0.5, 2.0, 0.9, {"dense": 1, "lexical": 3}),
            Hit(2, snippet(id=8, bbox=None), None, 0.25)]
    result = SearchResult(query="query", k=10, document_id=None, embedder="bundled", reranked=True, mode="hybrid",
                          hits=hits, notes=["a note"], timings_ms={"total": 3.5}, collections=["default"],
                          reranked_count=2, rerank_depth=20)
    body = presenters.search_json(result)
    conforms("SearchResponse", body)
    assert set(body["results"][0]) == set(SCHEMAS["Hit"]["properties"])


def test_a_search_filter_is_shown_as_the_component_says():
    every = SearchFilter(collections=("a",), document_ids=("0123456789abcdef",), kinds=("text",), page_from=2,
                         page_to=5, filename="*.pdf", uploaded_after=0.0, uploaded_before=1e9)
    assert set(every.describe()) == set(SCHEMAS["SearchFilter"]["properties"])
    conforms("SearchFilter", every.describe())
    conforms("SearchFilter", SearchFilter().describe())


def test_a_presenter_key_the_components_lack_is_caught(context):
    hit = presenters.hit_json(Hit(1, snippet(), document(), 0.5))
    with pytest.raises(AssertionError, match="'surprise' was unexpected"):
        conforms("Hit", {**hit, "surprise": 1})
    with pytest.raises(AssertionError, match="'score' is a required property"):
        conforms("Hit", {k: v for k, v in hit.items() if k != "score"})


# --------------------------------------------------------------------------- the checker


def test_checker_resolves_templates_and_refuses_undocumented_answers():
    assert template_pattern("/api/documents/{doc_id}/snippets").match("/api/documents/ab12/snippets")
    assert not template_pattern("/api/documents/{doc_id}").match("/api/documents/a/b")
    check = Contract(SPEC).check
    error = b'{"error": "No.", "code": "not_found"}'
    check("GET", "/api/documents/ab12", 404, "application/json", error)
    check("GET", "/api/nothing-here", 404, "application/json", error)
    check("GET", "/api/documents/ab12/pages/1/thumbnail", 200, "image/png", b"")
    check("GET", "/api/documents/ab12/export", 200, "application/x-ndjson", b"{}\n{}\n")
    check("GET", "/", 200, "text/html", b"<html>")  # pages are not the description's business
    with pytest.raises(AssertionError, match="does not document"):
        check("GET", "/api/documents/ab12", 409, "application/json", error)
    with pytest.raises(AssertionError, match="expected JSON"):
        check("GET", "/api/nothing-here", 404, "text/html", b"<html>")
    with pytest.raises(AssertionError, match="'code' is a required property"):
        check("DELETE", "/api/documents/ab12", 404, "application/json", b'{"error": "No."}')
    with pytest.raises(AssertionError, match="as 'text/plain'"):
        check("GET", "/api/documents/ab12/export", 200, "text/plain", b"")
    with pytest.raises(AssertionError, match="no such operation"):
        check("GET", "/api/secret", 200, "application/json", b"{}")
