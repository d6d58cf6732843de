"""Who may do what: the API token (bearer or signed-in session) and CSRF protection."""
from __future__ import annotations

import hmac
import secrets

from flask import current_app, request, session

from docenrich.web.errors import ApiError

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_ok() -> bool:
    """True when the request carries this session's CSRF token (header, or a plain form's field)."""
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    return token_matches(sent, session.get("csrf", ""))


def token_matches(sent: str, expected: str) -> bool:
    """Constant-time comparison; an empty expected value never matches."""
    return bool(sent and expected) and hmac.compare_digest(sent.encode(), expected.encode())


def signed_in() -> bool:
    """True when this session signed in with the current API_TOKEN (rotating the token signs everyone out)."""
    return token_matches(session.get("authed", ""), token_tag(current_app.config["API_TOKEN"]))


def token_tag(token: str) -> str:
    """A value for the session that proves knowledge of the token without storing it."""
    key = current_app.secret_key
    key = key if isinstance(key, bytes) else str(key).encode()
    return hmac.new(key, token.encode(), "sha256").hexdigest() if token else ""


def from_browser() -> bool:
    """Could a browser have sent this on a user's behalf? Browsers add Origin/Sec-Fetch-Site, or our cookie."""
    cookie = current_app.config["SESSION_COOKIE_NAME"]
    return cookie in request.cookies or "Origin" in request.headers or "Sec-Fetch-Site" in request.headers


def authenticate_api() -> None:
    """Before every /api request: a bearer token or a signed-in session when API_TOKEN is set; CSRF."""
    expected = current_app.config["API_TOKEN"]
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if expected and scheme.lower() == "bearer":
        if token_matches(sent.strip(), expected):
            return None  # bearer clients are not browsers riding on a cookie: no CSRF check
        raise ApiError(401, "The API token is wrong.", "unauthorized", {"WWW-Authenticate": "Bearer"})
    if expected and not signed_in():
        raise ApiError(401, "Send `Authorization: Bearer <API_TOKEN>`, or sign in on the page.", "unauthorized",
                       {"WWW-Authenticate": "Bearer"})
    if request.method in UNSAFE_METHODS and (expected or from_browser()) and not csrf_ok():
        raise ApiError(403, "The request lacks a valid CSRF token; reload the page and try again.", "csrf")
    return None
