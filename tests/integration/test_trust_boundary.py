"""The trust boundary of the web app over the real Redis: foreign Host names refused, what /healthz
tells a stranger, and a rate limit on sign-in counted in Redis."""
from __future__ import annotations

import uuid

from tests.helpers.web import make_app


def test_a_foreign_host_header_gets_400_as_dns_rebinding_would_send(redis_server):
    client = make_app(API_TOKEN="").test_client()
    assert client.get("/api/documents", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"Host": "attacker.example:5000"}).status_code == 400
    assert client.get("/api/documents", headers={"Host": "127.0.0.1:5000"}).status_code == 200
    served = make_app(ALLOWED_HOSTS="docs.example.org").test_client()
    assert served.get("/api/documents", headers={"Host": "docs.example.org"}).status_code == 200
    assert served.get("/api/documents", headers={"Host": "localhost"}).status_code == 400


def test_healthz_tells_a_stranger_only_ok_or_not(redis_server):
    client = make_app(API_TOKEN="s3cret").test_client()
    stranger = client.get("/healthz")
    assert set(stranger.get_json()) == {"status"}, stranger.get_json()
    insider = client.get("/healthz", headers={"Authorization": "Bearer s3cret"})
    assert {"redis", "workers", "queues", "documents"} <= set(insider.get_json())


def test_sign_in_attempts_are_rate_limited_per_address(redis_server):
    client = make_app(API_TOKEN="s3cret", LOGIN_RATE_LIMIT="3 per minute").test_client()
    address = {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"}

    def attempt(token: str):
        page = client.get("/login", environ_base=address)
        csrf = page.get_data(as_text=True).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        return client.post("/login?next=/%09/evil.example", data={"token": token, "csrf_token": csrf},
                           environ_base=address)

    assert [attempt("wrong").status_code for _ in range(3)] == [401, 401, 401]
    limited = attempt("s3cret")
    assert limited.status_code == 429 and "s3cret" not in limited.get_data(as_text=True)
    other = {"REMOTE_ADDR": "10.255.1.1"}
    page = client.get("/login", environ_base=other)
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    ok = client.post("/login?next=/%09/evil.example", data={"token": "s3cret", "csrf_token": csrf}, environ_base=other)
    assert ok.status_code == 302 and ok.headers["Location"] == "/", "another address signs in, and stays on site"
