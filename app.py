"""The docenrich web app: `create_app()`, the page routes, health, auth and error handling.

    python app.py          # serves on WEB_HOST:WEB_PORT (threaded)

The web process never loads a model: search and uploads go through the Celery worker.
"""
from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import redis
from flask import Flask, abort, jsonify, redirect, render_template, request, session, url_for
from kombu.exceptions import OperationalError
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

import bge
import search as search_mod
from api import (
    ApiError, api, csrf_ok, csrf_token, doc_json, run_search, services, signed_in, snippet_json, token_matches, token_tag,
)
from celery_config import ALL_QUEUES, celery_app
from settings import Settings, get_settings
from store import StorageError, Store, VectorIndex

log = logging.getLogger(__name__)

QUEUE_DOWN = "The task queue (Redis) is unreachable; try again shortly."
# Kombu's Redis transport keeps each priority level of a queue in its own list.
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)


class Services:
    """What one app shares between requests: the store, vector indexes, cached queue status."""

    def __init__(self, config: dict):
        self.store = Store(config["DATA_DIR"])
        self._indexes: dict[str, VectorIndex] = {}
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self.admission = threading.Lock()  # makes "count queued documents, then add one" atomic
        # Short timeouts: health checks and page banners must answer quickly while Redis is down.
        self.redis = redis.Redis.from_url(celery_app.conf.broker_url, socket_connect_timeout=1, socket_timeout=2)

    def index_for(self, embedder: str) -> VectorIndex:
        """The in-memory index of one embedder's vectors, created on first use."""
        with self._lock:
            if embedder not in self._indexes:
                self._indexes[embedder] = VectorIndex(self.store, embedder)
            return self._indexes[embedder]

    def cached(self, key: str, ttl: float, compute: Callable[[], Any]) -> Any:
        """compute() at most once per ttl seconds; concurrent callers wait for one computation."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # One lock per key: a 1 s worker ping must not hold up the status banner of every page.
        with key_lock:
            hit = self._cache.get(key)
            if hit and time.monotonic() - hit[0] < ttl:
                return hit[1]
            value = compute()
            self._cache[key] = (time.monotonic(), value)
            return value

    def queue_status(self) -> dict:
        """Redis reachability and the workers' model status, cached for a few seconds."""

        def compute() -> dict:
            try:
                self.redis.ping()
                return {"ok": True, "error": None, "models": bge.worker_models()}
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("Redis unreachable: %s", exc)
                return {"ok": False, "error": _redis_reason(exc), "models": {}}

        return self.cached("status", 3.0, compute)

    def workers_online(self) -> list[str]:
        """Names of the workers answering a ping, cached for 2 s."""

        def compute() -> list[str]:
            try:
                return sorted(name for reply in celery_app.control.ping(timeout=1) or [] for name in reply)
            except Exception as exc:
                log.warning("worker ping failed: %s", exc)
                return []

        return self.cached("ping", 2.0, compute)

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting in each Celery queue."""
        names = {q: [q, *(f"{q}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS)] for q in ALL_QUEUES}
        pipe = self.redis.pipeline()
        for keys in names.values():
            for key in keys:
                pipe.llen(key)
        counts = iter(pipe.execute())
        return {q: sum(next(counts) for _ in keys) for q, keys in names.items()}


def _redis_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"redis://\S+", "redis://…", text)  # never echo a password-bearing URL


# --------------------------------------------------------------------------- config


def _config_from_settings(s: Settings) -> dict:
    values = {f.name.upper(): getattr(s, f.name) for f in fields(s) if f.name != "extra"}
    values["SECRET_KEY"] = s.secret_key or None
    return values


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings, then FLASK_* environment variables, then test_config."""
    app = Flask(__name__)
    app.config.from_mapping(
        _config_from_settings(get_settings()),
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        MAX_UPLOAD_FILES=10,
    )
    app.config.from_prefixed_env()
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config["SECRET_KEY"]:
        log.warning("SECRET_KEY is not set: using a random one, so sessions end when the app restarts")
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        # Refuse oversized requests before reading them; 1 MiB covers the multipart framing.
        per_file = int(app.config["MAX_UPLOAD_MB"]) * 1024 * 1024
        app.config["MAX_CONTENT_LENGTH"] = per_file * int(app.config["MAX_UPLOAD_FILES"]) + 1024 * 1024
    app.json.sort_keys = False

    app.extensions["docenrich"] = Services(app.config)
    app.register_blueprint(api)
    _register_pages(app)
    _register_errors(app)
    app.jinja_env.filters["highlight"] = highlight
    return app


# --------------------------------------------------------------------------- pages


STOPWORDS = frozenset(
    "a an and are as at be by de der die das und for from how in is it of on or the to was what which who with".split()
)


def highlight(text: str, query: str) -> Markup:
    """Escape text, then wrap whole query words in <mark> (each piece is escaped on its own)."""
    words = {w for w in re.findall(r"\w{2,}", query or "")}
    words = sorted(words - STOPWORDS if words - STOPWORDS else words, key=len, reverse=True)
    if not words:
        return escape(text)
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    out, last = Markup(), 0
    for m in pattern.finditer(text):
        out += escape(text[last : m.start()]) + Markup("<mark>%s</mark>") % m.group(0)
        last = m.end()
    return out + escape(text[last:])


def _register_pages(app: Flask) -> None:
    @app.context_processor
    def page_context() -> dict:
        return {"csrf_token": csrf_token, "status_notices": status_notices}

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
                "form-action 'self'; frame-ancestors 'none'",
            )
        return response

    @app.before_request
    def require_login():
        # With API_TOKEN set the pages are private too: a person signs in once with the token.
        if not app.config["API_TOKEN"] or signed_in():
            return None
        # /api/... answers for itself (bearer token, JSON errors), also where no route matched.
        if request.endpoint in ("login", "healthz", "static") or request.blueprint == "api" \
                or request.path.startswith("/api/"):
            return None
        return redirect(url_for("login", next=request.full_path if request.method == "GET" else "/"))

    @app.route("/login", methods=["GET", "POST"])
    def login():
        error = None
        if request.method == "POST":
            if not csrf_ok():
                error = "The form expired; please try again."
            elif token_matches(request.form.get("token", ""), app.config["API_TOKEN"]):
                session["authed"] = token_tag(app.config["API_TOKEN"])
                target = request.args.get("next", "/")
                # Only local paths: "//host" and "/\host" would leave the site.
                return redirect(target if target.startswith("/") and target[1:2] not in ("/", "\\") else "/")
            else:
                error = "That token is not right."
        return render_template("login.html", error=error), 401 if error else 200

    @app.post("/logout")
    def logout():
        if csrf_ok():
            session.clear()
        return redirect(url_for("index"))

    @app.get("/")
    def index():
        docs = [doc_json(d) for d in services().store.list_documents()]
        return render_template("index.html", documents=docs, max_upload_mb=app.config["MAX_UPLOAD_MB"])

    @app.get("/documents/<doc_id>")
    def document(doc_id: str):
        store = services().store
        doc = store.get_document(doc_id)
        if doc is None:
            abort(404, description="There is no document with this id; it may have been deleted.")
        by_page: dict[int, list[dict]] = {}
        for snip in store.snippets(doc_id):
            by_page.setdefault(snip.page, []).append(snippet_json(snip))
        return render_template("document.html", doc=doc_json(doc), pages=by_page)

    @app.get("/search")
    def search_page():
        q = request.args.get("q", "").strip()[:1000]
        document_id = request.args.get("document") or None
        rerank = (request.args.getlist("rerank") or ["1"])[-1] not in ("0", "false", "off")
        svc = services()
        result, error, status = None, None, 200
        if q:
            try:
                result = run_search(q, 10, rerank, document_id)
            except bge.WorkerUnavailable as exc:
                error, status = f"Search is unavailable: {exc}.", 503
            except Exception as exc:
                if not caused_by(exc, QUEUE_ERRORS):
                    raise
                error, status = QUEUE_DOWN, 503
        docs = [d for d in svc.store.list_documents() if d.state == "ready"]
        return render_template(
            "search.html", q=q, result=result, error=error, documents=docs, document_id=document_id, rerank=rerank
        ), status

    @app.get("/healthz")
    def healthz():
        svc = services()
        status = svc.queue_status()
        body: dict[str, Any] = {"redis": {"ok": status["ok"], "error": status["error"]}}
        body["workers"] = svc.workers_online() if status["ok"] else []
        body["models"] = status["models"]
        try:
            body["queues"] = svc.queue_lengths() if status["ok"] else {}
        except redis.exceptions.RedisError as exc:
            body["queues"], body["redis"] = {}, {"ok": False, "error": _redis_reason(exc)}
        states = Counter(d.state for d in svc.store.list_documents())
        body["documents"] = {"queued": svc.store.queued_count(), "total": sum(states.values()), **states}
        healthy = body["redis"]["ok"] and bool(body["workers"])
        body["status"] = "ok" if healthy else "unavailable"
        return jsonify(body), 200 if healthy else 503


def status_notices() -> list[dict]:
    """Banners for every page: queue down, no worker, fallback embedder, no reranker. Never raises."""
    try:
        status = services().queue_status()
    except Exception:
        log.warning("status check failed", exc_info=True)
        status = {"ok": False, "models": {}}
    if not status["ok"]:
        return [{"level": "error", "text": "Queue unreachable: uploads and search wait until Redis is back."}]
    models = status["models"]
    if not models:
        return [{"level": "warn", "text": "No model worker is running: uploads wait and search is unavailable."}]
    notices = []
    if note := search_mod.fallback_note(models):
        notices.append({"level": "warn", "text": note})
    for worker in models.values():
        reason = ((worker.get("models") or {}).get("reranker") or {}).get("unavailable")
        if reason:
            notices.append({"level": "info", "text": f"Reranking unavailable ({reason}); results use vector order."})
            break
    return notices


# --------------------------------------------------------------------------- errors


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def _public(message: str) -> str:
    """A message with filesystem paths replaced, safe to show to anyone."""
    return re.sub(r"(?:/[\w.\-]+){2,}/?", "<path>", message)


QUEUE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)


def caused_by(exc: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    """True when exc or an exception in its cause/context chain is one of kinds."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _register_errors(app: Flask) -> None:
    def respond(status: int, message: str, code: str, headers: dict | None = None):
        if wants_json():
            return jsonify({"error": message, "code": code}), status, headers or {}
        return render_template("error.html", status=status, message=message), status, headers or {}

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        body = {"error": exc.message, "code": exc.code, **exc.extra}
        return jsonify(body), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
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

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(OperationalError)
    def queue_down(exc: Exception):
        log.warning("task queue unreachable: %s", exc)
        return respond(503, QUEUE_DOWN, "queue_unreachable", {"Retry-After": "5"})

    @app.errorhandler(bge.WorkerUnavailable)
    def worker_down(exc: Exception):
        return respond(503, f"The model worker did not answer: {exc}.", "worker_unavailable", {"Retry-After": "10"})

    @app.errorhandler(StorageError)
    def storage_error(exc: StorageError):
        log.error("storage error: %s", exc)
        full = "full" in str(exc).lower()
        return respond(507 if full else 503, _public(str(exc)), "storage_full" if full else "storage_error")

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        if caused_by(exc, QUEUE_ERRORS):
            # Celery wraps a lost result-backend connection in a RuntimeError.
            return queue_down(exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return respond(500, "Something went wrong on the server; the details are in its log.", "internal_error")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    create_app().run(host=settings.web_host, port=settings.web_port, threaded=True)
