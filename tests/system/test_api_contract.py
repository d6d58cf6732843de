"""Every route of the API, answered by gunicorn on a stack of its own, checked against the OpenAPI
description the server itself serves: each success and error status, body and media type."""
from __future__ import annotations

import json
import sys
import time

import pytest

from tests.api_contract import Contract
from tests.stack import Response, doubled_pdf, http_request, multipart, text_pdf

pytestmark = pytest.mark.slow

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:docenrich.cli.gunicorn_conf", "docenrich.web.wsgi:app"]
TOKEN = "contract-token"


class Client:
    """HTTP requests to one server, each answer checked against the description it serves."""

    def __init__(self, port: int, headers: dict | None = None):
        self.port, self.headers = port, headers or {}
        spec = http_request(port, "GET", "/api/openapi.json")
        assert spec.status == 200, spec.text
        self.contract = Contract(spec.json())

    def call(self, method: str, path: str, status: int, body: bytes | None = None, **headers: str) -> Response:
        """One request; its answer must have this status and match the description."""
        answer = http_request(self.port, method, path, body, {**self.headers, **headers})
        assert answer.status == status, (method, path, answer.status, answer.text[:500])
        self.contract.check(method, path.split("?", 1)[0], answer.status, answer.headers.get_content_type(),
                            answer.body)
        return answer

    def json(self, method: str, path: str, status: int, payload: dict | None = None, **headers: str) -> dict:
        """A request with an optional JSON body whose answer is JSON."""
        body = json.dumps(payload).encode() if payload is not None else None
        extra = {"Content-Type": "application/json"} if payload is not None else {}
        return self.call(method, path, status, body, **extra, **headers).json()

    def upload(self, path: str, status: int, *files: tuple[str, bytes]) -> dict:
        """POST files in multipart fields named `file`."""
        body, ctype = multipart(list(files))
        return self.call("POST", path, status, body, **{"Content-Type": ctype}).json()

    def ready(self, doc_id: str, timeout: float = 180) -> dict:
        """Poll a document until it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.json("GET", f"/api/documents/{doc_id}", 200)
            assert doc["state"] != "failed", doc
            if doc["state"] == "ready":
                return doc
            time.sleep(0.3)
        raise AssertionError(f"{doc_id} not ready: {doc}")


@pytest.fixture()
def server(make_stack, reranker_checkpoint):
    stack = make_stack()
    stack.worker("contract")
    return stack, stack.web("contract-web", argv=GUNICORN, WEB_WORKERS=1, WEB_THREADS=4)


def test_every_route_answers_as_the_description_says(server):
    stack, web = server
    api = Client(web.port)
    api.json("GET", "/healthz", 200)
    api.json("GET", "/api/openapi.json", 200)
    api.call("GET", "/api/docs", 200)

    # collections and uploads
    assert api.json("POST", "/api/collections", 201, {"name": "contract", "description": "Checked."})["url"]
    api.json("POST", "/api/collections", 200, {"name": "contract"})
    api.json("POST", "/api/collections", 400, {"name": "no/slashes"})
    pdf = text_pdf(2, seed=11)
    accepted = api.upload("/api/documents?collection=contract", 202, ("one.pdf", pdf), ("notes.pdf", b"plain text"))
    (doc,), (refused,) = accepted["documents"], accepted["errors"]
    assert refused["status"] == 415 and doc["task_id"] and doc["duplicate"] is False
    assert api.upload("/api/documents", 202, ("again.pdf", pdf))["documents"][0]["duplicate"] is True
    api.upload("/api/documents", 415, ("notes.pdf", b"plain text"))
    api.call("POST", "/api/documents", 400, b"", **{"Content-Type": "multipart/form-data; boundary=x"})
    task = api.json("GET", f"/api/tasks/{doc['task_id']}", 200)
    assert task["meta"]["document"] == doc["id"]
    api.json("GET", "/api/tasks/not-a-task", 404)

    # documents, snippets, images, pages, exports
    doc_id = api.ready(doc["id"])["id"]
    assert api.json("GET", "/api/documents?collection=contract", 200)["documents"][0]["collections"] == ["contract"]
    api.json("GET", "/api/documents", 200)
    snippets = api.json("GET", f"/api/documents/{doc_id}/snippets?limit=3", 200)["snippets"]
    api.json("GET", f"/api/documents/{doc_id}/snippets?page=2", 200)
    api.json("GET", f"/api/documents/{doc_id}/snippets?limit=0", 400)
    drawn = next(s for s in snippets if s["image_url"])
    api.call("GET", drawn["image_url"], 200)
    api.json("GET", "/api/snippets/999999999/image", 404)
    api.call("GET", f"/api/documents/{doc_id}/pages/1/thumbnail", 200)
    api.call("GET", f"/api/documents/{doc_id}/pages/2/image?width=600", 200)
    api.json("GET", f"/api/documents/{doc_id}/pages/9/thumbnail", 404)
    api.json("GET", f"/api/documents/{doc_id}/pages/1/image?width=9", 400)
    assert api.call("GET", f"/api/documents/{doc_id}/original", 200).body[:5] == b"%PDF-"
    api.json("GET", "/api/documents/0123456789abcdef/original", 404)
    api.call("GET", f"/api/documents/{doc_id}/export?format=jsonl", 200)
    api.call("GET", f"/api/documents/{doc_id}/export?format=parquet", 200)
    api.json("GET", f"/api/documents/{doc_id}/export?format=xml", 400)
    api.json("GET", "/api/documents/0123456789abcdef", 404)

    # search, in every mode
    words = snippets[0]["text"].split()[:6]
    for query in ("mode=hybrid&rerank=1", "mode=dense&rerank=0", "mode=lexical&rerank=0", f"document={doc_id}",
                  "mode=lexical&rerank=0&context=2"):
        found = api.json("GET", f"/api/search?q={'+'.join(words)}&k=3&{query}", 200)
        assert found["results"], query
        assert "context" not in query or any(r["context_before"] + r["context_after"] for r in found["results"])
    api.json("GET", "/api/search?q=", 400)
    api.json("GET", "/api/search?q=x&mode=psychic", 400)
    api.json("GET", "/api/search?q=x&k=many", 400)
    api.json("GET", "/api/search?q=x&context=6", 400)

    # membership, collections, status
    api.json("PUT", f"/api/collections/other/documents/{doc_id}", 200)
    api.json("GET", "/api/collections", 200)
    assert api.json("GET", "/api/collections/contract", 200)["document_list"][0]["id"] == doc_id
    api.call("GET", "/api/collections/contract/export", 200)
    api.json("DELETE", f"/api/collections/other/documents/{doc_id}", 200)
    api.json("DELETE", f"/api/collections/other/documents/{doc_id}", 404)
    api.json("GET", "/api/collections/missing", 404)
    api.json("GET", "/api/status", 200)

    # cancel: a finished document refuses, a long one in progress stops
    api.json("POST", f"/api/documents/{doc_id}/cancel", 409)
    long = api.upload("/api/documents", 202, ("long.pdf", doubled_pdf(7, "A long document about tides. ")))
    assert api.json("POST", f"/api/documents/{long['documents'][0]['id']}/cancel", 200)["state"] == "cancelled"

    # errors of any route
    api.json("GET", "/api/nothing-here", 404)
    api.json("PUT", "/api/documents", 405)
    api.json("DELETE", f"/api/documents/{doc_id}", 403, Origin="http://elsewhere.example")
    api.json("GET", "/api/documents", 400, Host="evil.example")

    # deletions
    assert api.json("DELETE", f"/api/documents/{doc_id}", 200) == {"deleted": doc_id}
    api.json("DELETE", f"/api/documents/{doc_id}", 404)
    api.json("DELETE", "/api/collections/contract", 200)

    # behind a token: 401 without it, only `status` from /healthz
    locked = stack.web("contract-locked", argv=GUNICORN, WEB_WORKERS=1, API_TOKEN=TOKEN)
    anonymous = Client(locked.port)
    anonymous.json("GET", "/api/documents", 401)
    assert set(anonymous.json("GET", "/healthz", 200)) == {"status"}
    assert "models" in Client(locked.port, {"Authorization": f"Bearer {TOKEN}"}).json("GET", "/healthz", 200)

    # every operation of the description answered at least once with success
    operations = {(path, method) for path, item in api.contract.spec["paths"].items() for method in item}
    succeeded = {(path, method) for path, method, status in api.contract.seen if status.startswith("2")}
    assert operations - succeeded == set()
