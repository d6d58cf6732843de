"""Prometheus metrics at /metrics, parsed with prometheus_client's own parser, from a real stack."""
from __future__ import annotations

import io
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.pdfs import pdf_with_text
from tests.helpers.wait import wait_for
from tests.helpers.web import make_app, post_files, upload, wait_ready


def scrape(client, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew_by(before, after, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def matching(samples, name: str, **labels) -> list[tuple[dict, float]]:
    return [(dict(ls), v) for (n, ls), v in samples.items()
            if n == name and all(dict(ls).get(k) == w for k, w in labels.items())]


@pytest.mark.slow
def test_metrics_cover_documents_ingestion_queues_search_refusals_and_workers(worker):
    app = make_app()
    client = app.test_client()
    before = scrape(client)
    marker = uuid.uuid4().hex[:8]
    doc = wait_ready(client, upload(client, pdf_with_text(f"Metrics {marker} about tidal harbours.", "Page two."),
                                    f"m-{marker}.pdf")["id"])
    assert post_files(client, (b"not a pdf at all", "notes.pdf")).status_code == 415
    assert client.get(f"/api/search?q=tidal+harbours+{marker}&rerank=1").status_code == 200
    after = scrape(client)

    assert value(after, "docenrich_documents", state="ready") >= 1
    assert {ls["state"] for ls, _ in matching(after, "docenrich_documents")} >= {"queued", "ready", "failed"}
    grew = lambda name: value(after, name) - value(before, name)  # noqa: E731
    assert grew("docenrich_snippets_ingested_total") >= doc["snippet_count"] > 0
    assert grew("docenrich_pages_ingested_total") >= 2
    assert grew("docenrich_documents_ingested_total") >= 1
    assert {ls["queue"] for ls, _ in matching(after, "docenrich_queue_backlog")} == {"interactive", "models", "docs"}
    # Web observations are kept in Redis, shared by every web process (and this session's apps): count what grew.
    for stage in ("embed", "retrieve", "rerank", "total"):
        assert grew_by(before, after, "docenrich_search_seconds_count", stage=stage) == 1
    assert grew_by(before, after, "docenrich_search_seconds_bucket", stage="total", le="+Inf") == 1
    assert grew_by(before, after, "docenrich_upload_refusals_total", reason="not_pdf") == 1

    # Pushed by the worker through Redis.
    extract = "docenrich.extract_pages"
    assert value(after, "docenrich_task_duration_seconds_count", task=extract) >= 1
    assert value(after, "docenrich_task_duration_seconds_sum", task=extract) > 0
    assert value(after, "docenrich_tasks_total", task=extract, state="SUCCESS") >= 1
    # The search embedded the query, then reranked: the worker switched to the reranker.
    assert value(after, "docenrich_model_switches_total", kind="reranker") >= 1
    assert value(after, "docenrich_model_switch_seconds_total", kind="reranker") > 0
    # The app caches the workers' published status for a few seconds.
    resident = wait_for(lambda: [r for r in matching(scrape(client), "docenrich_resident_model", worker=worker.hostname)
                                 if r[0]["kind"] != "none"], 10, 0.5, "the resident model to show")
    assert len(resident) == 1 and resident[0][1] == 1
    assert resident[0][0]["kind"] in ("embedder", "reranker") and resident[0][0]["model"]
    assert value(after, "docenrich_redis_up") == 1


def test_metrics_need_the_token_when_one_is_set(worker):
    client = make_app(API_TOKEN="metrics-token").test_client()
    response = client.get("/metrics")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    samples = scrape(client, {"Authorization": "Bearer metrics-token"})
    assert matching(samples, "docenrich_documents")


def test_a_refused_upload_is_counted_by_reason(worker):
    client = make_app().test_client()
    data = {"file": [(io.BytesIO(b""), "empty.pdf"), (io.BytesIO(b"%PDF-1.4 broken"), "broken.pdf")]}
    before = scrape(client)
    assert client.post("/api/documents", data=data, content_type="multipart/form-data").status_code >= 400
    after = scrape(client)
    reasons = {ls["reason"]: v - value(before, "docenrich_upload_refusals_total", **ls)
               for ls, v in matching(after, "docenrich_upload_refusals_total")}
    reasons = {reason: grown for reason, grown in reasons.items() if grown}
    assert sum(reasons.values()) == 2 and all(v == 1 for v in reasons.values()), reasons


def test_status_json_and_page_show_workers_queues_throughput_and_failures(worker):
    app = make_app()
    client = app.test_client()
    store = app.extensions["docenrich"].store
    marker = uuid.uuid4().hex[:8]
    doc, _ = store.add_document(pdf_with_text(f"Doomed {marker}"), f"doomed-{marker}.pdf")
    store.update_document(doc.id, state="failed", stage="failed", error=f"extracting pages 1–1 failed: {marker}")
    ok = wait_ready(client, upload(client, pdf_with_text(f"Fine {marker}"), f"fine-{marker}.pdf")["id"])
    status = client.get("/api/status").get_json()
    names = {w["name"]: w for w in status["workers"]}
    assert names[worker.hostname]["online"] and names[worker.hostname]["model_worker"]
    assert set(status["queues"]) == {"interactive", "models", "docs"}
    assert len(status["throughput"]) == 60 and sum(m["snippets"] for m in status["throughput"]) >= ok["snippet_count"]
    failure = next(f for f in status["failures"] if f["id"] == doc.id)
    assert marker in failure["error"]
    html = client.get("/status").get_data(as_text=True)
    assert worker.hostname in html and f"doomed-{marker}.pdf" in html and marker in html
    assert html.count('class="bar-rect"') == 60 and "<svg" in html
