"""The web app's trust boundary: which Host names it answers, where sign-in may send a browser,
and how often sign-in may be tried (Flask-Limiter, counted in Redis for every web process)."""
from __future__ import annotations

import ipaddress
import logging
from urllib.parse import unquote, urlsplit

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from docenrich.web.errors import ApiError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

# Sign-in attempts per client address; the limit itself is the LOGIN_RATE_LIMIT setting.
limiter = Limiter(key_func=get_remote_address, default_limits=[])


def login_limit() -> str:
    """The sign-in rate limit, read from the app's settings."""
    return current_app.config["LOGIN_RATE_LIMIT"]


def init_app(app) -> None:
    """Host checks before every request, and the limiter's Redis storage."""
    from docenrich.celery_app import celery_app

    app.config.setdefault("RATELIMIT_STORAGE_URI", celery_app.conf.broker_url)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "docenrich-limits")
    # Redis away: sign-in is still possible (the queue banner says Redis is down), not a 500.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)
    hosts = allowed_hosts(app.config.get("ALLOWED_HOSTS", ""), app.config.get("WEB_HOST", ""))
    app.config["ALLOWED_HOST_NAMES"] = hosts
    if hosts is None and not app.testing:
        log.warning("ALLOWED_HOSTS is not set and the app listens on %s: any Host header is answered. "
                    "Set ALLOWED_HOSTS to the names clients use.", app.config.get("WEB_HOST"))
    app.before_request(check_host)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(setting: str, bind: str) -> frozenset[str] | None:
    """The Host names to answer (None: any). ALLOWED_HOSTS if set ("*" for any); else the loopback
    names when bound to loopback, which keeps DNS rebinding from reaching a local instance."""
    names = frozenset(h.strip().lower().strip("[]") for h in setting.split(",") if h.strip())
    if "*" in names:
        return None
    if names:
        return names
    return LOOPBACK_NAMES if _is_loopback(bind or "127.0.0.1") else None


def host_name(header: str) -> str:
    """The name part of a Host header: without the port, IPv6 brackets removed, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def check_host():
    """400 for a Host header the app does not answer to (DNS rebinding, a forged name)."""
    allowed = current_app.config.get("ALLOWED_HOST_NAMES")
    if allowed is None:
        return None
    if host_name(request.headers.get("Host", "")) not in allowed:
        raise ApiError(400, "This host name is not served here; set ALLOWED_HOSTS to allow it.", "bad_host")
    return None


def safe_next(target: str | None) -> str:
    """A path on this site to go to after sign-in; anything that could leave the site becomes "/"."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    # Browsers drop tabs and newlines and read "\\" as "/": "/%09/evil.example" is "//evil.example".
    # The path is checked decoded too, so a redirect through another decoding step stays on site.
    path = target.split("?", 1)[0]
    for form in (path, unquote(path)):
        if not form.startswith("/") or form.startswith("//"):
            return "/"
        if any(c.isspace() or ord(c) < 32 or c == "\\" for c in form):
            return "/"
    return target
