"""Errors as people and programs see them: JSON under /api and /healthz, a page elsewhere."""
from __future__ import annotations

import logging
import re
from typing import Any

import redis
from flask import Flask, jsonify, render_template, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from docenrich.client import WorkerUnavailable
from docenrich.errors import caused_by
from docenrich.storage import StorageError

log = logging.getLogger(__name__)

QUEUE_DOWN = "The task queue (Redis) is unreachable; try again shortly."
QUEUE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)


class ApiError(Exception):
    """An error answered as JSON `{"error": message, "code": code}` with an HTTP status."""

    def __init__(self, status: int, message: str, code: str, headers: dict | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.extra = status, message, code, headers or {}, extra


def wants_json() -> bool:
    """Whether this request is answered in JSON."""
    return request.path.startswith("/api/") or request.path == "/healthz"


def public(message: str) -> str:
    """A message with filesystem paths replaced, safe to show to anyone."""
    return re.sub(r"(?:/[\w.\-]+){2,}/?", "<path>", message)


def redis_reason(exc: BaseException) -> str:
    """Why Redis failed, without a password-bearing URL."""
    text = str(exc) or type(exc).__name__
    return re.sub(r"redis://\S+", "redis://…", text)


def respond(status: int, message: str, code: str, headers: dict | None = None):
    """An error response in the form this request expects."""
    if wants_json():
        return jsonify({"error": message, "code": code}), status, headers or {}
    return render_template("error.html", status=status, message=message), status, headers or {}


def _http_error(app: Flask, exc: HTTPException):
    message = exc.description or exc.name
    if exc.code == 413:
        message = f"The upload is larger than the limit of {app.config['MAX_UPLOAD_MB']} MB per file."
    elif exc.code == 404 and "requested URL was not found" in message:
        message = "Nothing here: check the address."
    elif exc.code == 405:
        message = f"{request.method} is not allowed here."
    headers = dict(exc.get_response().headers) if exc.code in (401, 405, 429) else {}
    headers.pop("Content-Type", None)
    headers.pop("Content-Length", None)
    return respond(exc.code or 500, message, exc.name.lower().replace(" ", "_"), headers)


def _queue_down(exc: Exception):
    log.warning("task queue unreachable: %s", exc)
    return respond(503, QUEUE_DOWN, "queue_unreachable", {"Retry-After": "5"})


def _storage_error(exc: StorageError):
    log.error("storage error: %s", exc)
    full = "full" in str(exc).lower()
    return respond(507 if full else 503, public(str(exc)), "storage_full" if full else "storage_error")


def _internal_error(exc: Exception):
    if caused_by(exc, QUEUE_ERRORS):
        # Celery wraps a lost result-backend connection in a RuntimeError.
        return _queue_down(exc)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return respond(500, "Something went wrong on the server; the details are in its log.", "internal_error")


def register_errors(app: Flask) -> None:
    """Install the error handlers on the app."""
    app.register_error_handler(
        ApiError, lambda exc: (jsonify({"error": exc.message, "code": exc.code, **exc.extra}), exc.status, exc.headers)
    )
    app.register_error_handler(HTTPException, lambda exc: _http_error(app, exc))
    for kind in QUEUE_ERRORS:
        app.register_error_handler(kind, _queue_down)
    app.register_error_handler(
        WorkerUnavailable,
        lambda exc: respond(503, f"The model worker did not answer: {exc}.", "worker_unavailable", {"Retry-After": "10"}),
    )
    app.register_error_handler(StorageError, _storage_error)
    app.register_error_handler(Exception, _internal_error)
