"""Collections: the store's tables and rules, and the API and search over them, with a real worker."""
from __future__ import annotations

import io
import json
import uuid

import pyarrow.parquet as pq
import pytest

from tests.helpers.pdfs import pdf_with_text
from tests.helpers.web import wait_ready
from tests.storeutil import stored_pdfs

# --------------------------------------------------------------------------- the store


@pytest.fixture()
def st(any_store):
    """The store-level tests run on SQLite and on PostgreSQL."""
    return any_store


def test_documents_go_to_default_unless_a_collection_is_named(st):
    plain, _ = st.add_document(pdf_with_text("plain"), "plain.pdf")
    data = pdf_with_text("named")
    named, _ = st.add_document(data, "named.pdf", collections=["Project A"])
    assert st.collections_of([plain.id, named.id]) == {plain.id: ["default"], named.id: ["Project A"]}
    # The same bytes again, into another collection: one document in two collections.
    again, created = st.add_document(data, "named.pdf", collections=["reports"])
    assert (again.id, created) == (named.id, False)
    assert st.collections_of([named.id])[named.id] == ["Project A", "reports"]
    # The same bytes without a collection change nothing.
    st.add_document(data, "named.pdf")
    assert st.collections_of([named.id])[named.id] == ["Project A", "reports"]
    counts = {c.name: c.documents for c in st.list_collections()}
    assert counts == {"default": 1, "Project A": 1, "reports": 1}
    assert [d.id for d in st.list_documents(["reports", "default"])] == [named.id, plain.id]
    assert st.collection_document_ids(["Project A"]) == {named.id}


def test_deleting_a_collection_keeps_documents_that_belong_elsewhere(st):
    only, _ = st.add_document(pdf_with_text("only here"), "only.pdf", collections=["gone"])
    shared, _ = st.add_document(pdf_with_text("shared"), "shared.pdf", collections=["gone", "kept"])
    assert f"{only.sha256}.pdf" in stored_pdfs(st)
    assert sorted(st.delete_collection("gone")) == [only.id]
    assert st.get_document(only.id) is None and stored_pdfs(st) == [f"{shared.sha256}.pdf"]
    assert st.get_document(shared.id) is not None
    assert st.collections_of([shared.id])[shared.id] == ["kept"]
    assert st.get_collection("gone") is None and st.delete_collection("gone") is None


@pytest.mark.parametrize("name", ["", " ", "-lead", "a/b", "x" * 65, "semi;colon", "_under"])
def test_bad_collection_names_are_refused(st, name):
    with pytest.raises(ValueError, match="collection name"):
        st.create_collection(name)


# --------------------------------------------------------------------------- through the API


@pytest.fixture(scope="module")
def grouped(app):
    """Three documents: one in `alpha`, one in `beta`, one in both, each with a marker word."""
    client = app.test_client()
    tag = uuid.uuid4().hex[:6]
    names = {"alpha": f"alpha-{tag}", "beta": f"beta-{tag}"}
    texts = {
        "a": f"Lighthouse keepers {tag} trimmed the lamp wicks every evening before the storm.",
        "b": f"Beekeepers {tag} inspect the hives for the queen bee in early spring.",
        "ab": f"Glassblowers {tag} heat the furnace until the sand melts into clear glass.",
    }
    docs = {}
    for key, collection in (("a", names["alpha"]), ("b", names["beta"])):
        response = client.post("/api/documents", content_type="multipart/form-data", data={
            "file": [(io.BytesIO(pdf_with_text(texts[key])), f"{key}-{tag}.pdf")], "collection": collection})
        assert response.status_code == 202, response.get_json()
        docs[key] = response.get_json()["documents"][0]
    response = client.post(f"/api/documents?collection={names['alpha']},{names['beta']}",
                           data={"file": [(io.BytesIO(pdf_with_text(texts["ab"])), f"ab-{tag}.pdf")]},
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    docs["ab"] = response.get_json()["documents"][0]
    for doc in docs.values():
        wait_ready(client, doc["id"])
    return {"tag": tag, "names": names, "docs": docs}


def found(client, query: str, *collections: str) -> set[str]:
    params = "&".join(f"collection={c}" for c in collections)
    body = client.get(f"/api/search?q={query}&k=50&rerank=0&{params}").get_json()
    return {r["document_id"] for r in body["results"]}


@pytest.mark.slow
def test_upload_list_and_search_by_collection(app, grouped):
    client = app.test_client()
    ids = {k: d["id"] for k, d in grouped["docs"].items()}
    alpha, beta = grouped["names"]["alpha"], grouped["names"]["beta"]
    assert grouped["docs"]["a"]["collections"] == [alpha]
    assert sorted(grouped["docs"]["ab"]["collections"]) == sorted([alpha, beta])
    listed = client.get(f"/api/documents?collection={alpha}").get_json()["documents"]
    assert {d["id"] for d in listed} == {ids["a"], ids["ab"]}
    query = f"{grouped['tag']} work"
    assert found(client, query, alpha) & set(ids.values()) == {ids["a"], ids["ab"]}
    assert found(client, query, beta) & set(ids.values()) == {ids["b"], ids["ab"]}
    assert found(client, query, alpha, beta) & set(ids.values()) == set(ids.values())
    assert found(client, query) >= set(ids.values())
    assert found(client, query, "all") >= set(ids.values())
    assert found(client, query, f"nobody-{grouped['tag']}") == set()
    body = client.get(f"/api/search?q=x&collection={alpha}").get_json()
    assert body["collections"] == [alpha]
    shown = client.get(f"/api/collections/{alpha}").get_json()
    assert shown["documents"] == 2 and shown["snippets"] > 0
    assert {d["id"] for d in shown["document_list"]} == {ids["a"], ids["ab"]}
    all_names = {c["name"] for c in client.get("/api/collections").get_json()["collections"]}
    assert {alpha, beta} <= all_names


@pytest.mark.slow
def test_collection_export_streams_jsonl_and_parquet(app, grouped):
    client = app.test_client()
    alpha = grouped["names"]["alpha"]
    expected = {grouped["docs"]["a"]["id"], grouped["docs"]["ab"]["id"]}
    response = client.get(f"/api/collections/{alpha}/export?format=jsonl")
    assert response.status_code == 200 and response.is_streamed
    assert f"{alpha}.jsonl" in response.headers["Content-Disposition"]
    rows = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert {r["document_id"] for r in rows} == expected
    assert all(len(r["embedding"]) == 384 for r in rows)
    response = client.get(f"/api/collections/{alpha}/export?format=parquet")
    assert response.status_code == 200 and response.is_streamed
    table = pq.read_table(io.BytesIO(response.get_data()))
    assert set(table.column("document_id").to_pylist()) == expected
    assert table.num_rows == len(rows)
    assert client.get(f"/api/collections/{alpha}/export?format=xml").status_code == 400


@pytest.mark.slow
def test_membership_and_delete_collection(app, grouped):
    client = app.test_client()
    tag, ids = grouped["tag"], {k: d["id"] for k, d in grouped["docs"].items()}
    extra = f"extra-{tag}"
    response = client.put(f"/api/collections/{extra}/documents/{ids['b']}")
    assert response.status_code == 200 and extra in response.get_json()["collections"]
    assert client.delete(f"/api/collections/{extra}/documents/{ids['b']}").status_code == 200
    assert client.delete(f"/api/collections/{extra}/documents/{ids['b']}").status_code == 404
    created = client.post("/api/collections", json={"name": f"empty-{tag}", "description": "nothing yet"})
    assert created.status_code == 201 and created.get_json()["documents"] == 0
    assert client.post("/api/collections", json={"name": f"empty-{tag}"}).status_code == 200
    assert client.post("/api/collections", json={"name": "../etc"}).get_json()["code"] == "bad_collection"
    assert client.get("/api/search?q=x&collection=a/b").status_code == 400

    # Deleting beta removes b (only there) but keeps ab (also in alpha).
    response = client.delete(f"/api/collections/{grouped['names']['beta']}")
    assert response.status_code == 200
    assert response.get_json()["documents_deleted"] == [ids["b"]]
    assert client.get(f"/api/documents/{ids['b']}").status_code == 404
    assert client.get(f"/api/documents/{ids['ab']}").get_json()["collections"] == [grouped["names"]["alpha"]]
    assert found(client, f"{tag} bees hives") & {ids["b"]} == set()
    assert client.get(f"/api/collections/{grouped['names']['beta']}").status_code == 404
