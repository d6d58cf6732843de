"""What one web app shares between requests: the store, vector indexes, cached queue status."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from docenrich import client, search
from docenrich.celery_app import celery_app
from docenrich.filters import SearchFilter
from docenrich.storage import VectorSearch, open_store
from docenrich.web.errors import redis_reason
from docenrich.web.metrics import WebMetrics

log = logging.getLogger(__name__)


class Services:
    """The store, one vector index per embedder, and short-lived caches of the workers' status."""

    def __init__(self, config: dict):
        self.config = config
        self.store = open_store(data_dir=config["DATA_DIR"], database_url=config.get("DATABASE_URL") or "")
        self._indexes: dict[str, VectorSearch] = {}
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        # Short timeouts: health checks and page banners must answer quickly while Redis is down.
        self.redis = redis.Redis.from_url(celery_app.conf.broker_url, socket_connect_timeout=1, socket_timeout=2)
        self.metrics = WebMetrics(self)

    def index_for(self, embedder: str) -> VectorSearch:
        """The dense index of one embedder (in memory on SQLite, in SQL on PostgreSQL), made on first use."""
        with self._lock:
            if embedder not in self._indexes:
                self._indexes[embedder] = self.store.vector_index(embedder)
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
                return {"ok": True, "error": None, "models": client.worker_models()}
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("Redis unreachable: %s", exc)
                return {"ok": False, "error": redis_reason(exc), "models": {}}

        return self.cached("status", 3.0, compute)

    def cancel(self, doc_id: str):
        """Cancel an unfinished document's ingestion (docenrich.cancel); None when gone or finished."""
        from docenrich import cancel
        from docenrich.celery_app import celery_app

        return cancel.cancel(self.store, self.redis, celery_app.control, doc_id)

    def workers_online(self) -> list[str]:
        """Names of the workers answering a ping, cached for 2 s."""
        return self.cached("ping", 2.0, client.workers_online)

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting in each Celery queue."""
        return client.queue_lengths(self.redis)

    def require_queue(self) -> None:
        """Fail fast while Redis is known to be down instead of waiting on Celery's retries."""
        if not self.queue_status()["ok"]:
            raise redis.exceptions.ConnectionError("Redis is unreachable (cached status)")

    def search(self, q: str, k: int, rerank: bool, document_id: str | None, mode: str | None = None,
               include_kinds: frozenset[str] = frozenset(), collections: list[str] | None = None,
               filter: SearchFilter | None = None, context: int = 0) -> search.SearchResult:
        """A search (within a filter, or everything) with this app's store, indexes, settings and worker status;
        `context` neighbours either side of each hit."""
        mode = mode or self.config["SEARCH_MODE"]
        if mode != "lexical" or rerank:
            self.require_queue()
        result = search.search(
            self.store, self.index_for, q, k=k, rerank=rerank, document_id=document_id,
            top_n=self.config["SEARCH_RERANK_TOP_N"], mode=mode, include_kinds=include_kinds,
            collections=collections, filter=filter, context=context,
            worker_status=lambda: self.queue_status()["models"],
        )
        self.metrics.observe_search(result.timings_ms)
        return result

