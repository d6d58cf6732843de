"""The OpenAPI 3.1 description: it validates, documents every /api route and method, and renders offline."""
from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from tests.helpers.web import make_app


@pytest.fixture(scope="module")
def app(redis_server):
    return make_app()


def api_routes(app) -> set[tuple[str, str]]:
    """(path in OpenAPI form, method) of every registered /api route, and /healthz."""
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") and rule.rule != "/healthz":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out.update((path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"})
    return out


def test_description_validates_and_documents_every_api_route(app):
    spec = app.test_client().get("/api/openapi.json").get_json()
    validate(spec)  # raises on an invalid OpenAPI 3.1 document
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    routes = api_routes(app)
    assert routes - documented == set(), "routes missing from the description"
    assert documented - routes == set(), "the description names routes that do not exist"
    assert len(routes) >= 20


def test_every_operation_lists_parameters_and_error_responses(app):
    spec = app.test_client().get("/api/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), (path, method)
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (path, method)
            if op.get("security") != []:  # behind the token
                assert {"400", "401", "500", "503", "507"} <= codes, (path, method)
            else:
                assert {"400", "500"} <= codes and "401" not in codes, (path, method)
            if "{doc_id}" in path or "{name}" in path:
                assert "404" in codes, (path, method)
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "code"]


def test_description_and_docs_page_are_public_and_self_contained(worker):
    app = make_app(API_TOKEN="s3cret")
    client = app.test_client()
    assert client.get("/api/documents").status_code == 401
    assert client.get("/api/openapi.json").status_code == 200
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/static/api-docs.js" in html
    script = client.get("/static/api-docs.js")
    assert script.status_code == 200
    for text in (html, script.get_data(as_text=True)):
        assert not re.search(r"https?://", text), "the docs page must not load anything from elsewhere"
