"""Redis stays bounded: searches leave no keys behind, pipeline tasks keep no results, and every
key after a workload belongs to a documented family, with a TTL where its family grows."""
from __future__ import annotations

import urllib.parse

import pytest
import redis

from docenrich import keys
from tests.helpers.pdfs import text_pdf

pytestmark = pytest.mark.slow


def key_ttls(client: redis.Redis) -> dict[str, int]:
    """Every key in the database with its TTL in seconds (-1: none)."""
    out = {}
    for raw in client.scan_iter(count=1000):
        name = raw.decode()
        ttl = client.ttl(raw)
        if ttl != -2:  # expired between SCAN and TTL
            out[name] = ttl
    return out


def search(web, query: str) -> dict:
    response = web.get("/api/search?" + urllib.parse.urlencode({"q": query, "k": 5}))
    assert response.status == 200, response.text
    return response.json()


def test_searches_and_ingestion_leave_only_documented_keys(make_stack):
    stack = make_stack()
    web = stack.web("keys-web")
    stack.worker("keys")
    uploaded = web.upload([(f"keys-{i}.pdf", text_pdf(3, seed=70 + i)) for i in range(2)])
    assert uploaded.status == 202, uploaded.text
    ids = [d["id"] for d in uploaded.json()["documents"]]
    assert all(d.state == "ready" for d in stack.wait_finished(ids).values())
    client = redis.Redis.from_url(stack.redis.url)

    for i in range(5):
        assert search(web, f"warm up search {i}")["results"]
    before = key_ttls(client)
    for i in range(40):
        search(web, f"distinct question number {i} about the harbour")
    after = key_ttls(client)

    # Keys that may come and go by themselves (one recovery-sweep lock, say) are single names;
    # what a search would leave behind is one more key of a family.
    grown = sorted(k for k in set(after) - set(before) if "*" in getattr(keys.family_of(k), "pattern", "*"))
    assert grown == [], f"40 searches left {len(grown)} new keys: {grown[:8]}"
    results = {k: client.get(k) for k in after if k.startswith("celery-task-meta-")}
    assert not results, f"no result outlives its reader: {results}"
    assert keys.undocumented(after) == []


def test_public_tasks_keep_their_results_for_minutes(make_stack, bundled_model):
    stack = make_stack()
    stack.worker("results", "models")
    sent = stack.app.send_task("docenrich.get_sentence_embedding", args=["a question"])
    assert sent.get(timeout=120).shape == (384,)
    client = redis.Redis.from_url(stack.redis.url)
    ttl = client.ttl(f"celery-task-meta-{sent.id}")
    assert 0 < ttl <= 600, f"a .delay() result should be kept for minutes, not {ttl} s"
    assert b"args" not in client.get(f"celery-task-meta-{sent.id}"), "no extended results"
