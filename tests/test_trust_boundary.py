"""The trust boundary of the web app: Host names, where sign-in redirects, what /healthz tells a
stranger, and a rate limit on sign-in counted in the real Redis."""
from __future__ import annotations

import os
import uuid

import pytest

from docenrich.web.trust import allowed_hosts, host_name, safe_next


def make_app(**config):
    from app import create_app

    return create_app({"TESTING": True, "SECRET_KEY": "test", "DATA_DIR": os.environ["DATA_DIR"], **config})


@pytest.mark.parametrize("target", ["/%09/evil.example", "/\t/evil.example", "//evil.example", "/\\evil.example",
                                    "https://evil.example/", "javascript:alert(1)", "", None, " /x", "/\n/evil"])
def test_next_leaves_nothing_but_local_paths(target):
    assert safe_next(target) == "/"


def test_next_keeps_a_local_path_with_its_query():
    assert safe_next("/search?q=a%20b&k=5") == "/search?q=a%20b&k=5"


def test_allowed_hosts_default_to_loopback_names_on_loopback():
    assert allowed_hosts("", "127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("", "0.0.0.0") is None
    assert allowed_hosts("docs.example.org, Other.example", "0.0.0.0") == {"docs.example.org", "other.example"}
    assert allowed_hosts("*", "127.0.0.1") is None
    assert [host_name(h) for h in ("LocalHost:5000", "[::1]:5000", "127.0.0.1", "::1")] == [
        "localhost", "::1", "127.0.0.1", "::1"]


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


def test_storage_errors_name_no_host_user_or_path(tmp_path):
    from docenrich.storage import SQLiteStore, StorageError
    from docenrich.storage.postgres import PostgresStore

    with pytest.raises(StorageError) as refused:
        PostgresStore("postgresql://alice:pw@127.0.0.1:1/secretdb")
    assert not any(word in str(refused.value) for word in ("alice", "127.0.0.1", "secretdb")), refused.value
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where DATA_DIR should be")
    with pytest.raises(StorageError) as unwritable:
        SQLiteStore(blocker / "data")
    assert str(tmp_path) not in str(unwritable.value), unwritable.value
