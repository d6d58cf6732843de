"""Who may use the API through the app in this process: a configured API token, and the CSRF rule
for requests a browser sends."""
from __future__ import annotations

import pytest

from tests.helpers.web import assert_clean_error, make_app, post_files

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def client(worker):
    return make_app().test_client()


def test_api_token_is_required_when_configured(worker):
    client = make_app(API_TOKEN="s3cret-token").test_client()
    assert_clean_error(client.get("/api/documents"), 401)
    assert_clean_error(client.get("/api/documents", headers={"Authorization": "Bearer wrong"}), 401)
    assert client.get("/api/documents", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    # Bearer clients need no CSRF token.
    response = post_files(client, (PNG, "x.pdf"), headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 415
    # The pages sign in with the token, then the page's session may use the API.
    assert client.get("/").status_code == 302
    login = client.get("/login")
    token = _meta_csrf(login.get_data(as_text=True))
    assert client.post("/login", data={"token": "nope", "csrf_token": token}).status_code == 401
    assert client.post("/login", data={"token": "s3cret-token", "csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 200
    assert client.get("/api/documents").status_code == 200
    assert_clean_error(client.delete("/api/documents/0123456789abcdef"), 403)
    assert_clean_error(client.delete("/api/documents/0123456789abcdef", headers={"X-CSRF-Token": token}), 404)


def test_csrf_rule(client):
    # A plain client (no cookie, no Origin), like curl -F, needs no token.
    assert post_files(client, (PNG, "x.pdf")).status_code == 415
    # A browser-sent request (Origin header) without the token is refused...
    assert_clean_error(post_files(client, (PNG, "x.pdf"), headers={"Origin": "https://evil.example"}), 403)
    # ...and so is one riding on the page's session cookie.
    token = _meta_csrf(client.get("/").get_data(as_text=True))
    assert_clean_error(post_files(client, (PNG, "x.pdf")), 403)
    assert post_files(client, (PNG, "x.pdf"), headers={"X-CSRF-Token": token}).status_code == 415


def _meta_csrf(html: str) -> str:
    import re

    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
