"""Per-thread, fork-safe PostgreSQL connections and the transactions built on them."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from docenrich.storage.base import StorageError, TransientStorageError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
# Connections inherited through fork share the parent's socket: a child must neither use nor
# close them (closing would end the parent's session too); parking them here keeps them untouched.
_FORKED_CONNECTIONS: list[Any] = []


def open_connection(url: str, *, vectors: bool = True) -> psycopg.Connection:
    """A new autocommit connection with dict rows (and the vector type known); StorageError if refused."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        log.warning("could not connect to the database: %s", exc)
        raise TransientStorageError("Could not connect to the database: it is unreachable or restarting.") from exc
    if vectors:
        from pgvector.psycopg import register_vector

        register_vector(conn)
    return conn


def storage_reason(exc: BaseException) -> str | None:
    """Human wording for a database error that is about the storage (not a bug), else None.

    The wording never names the server, user or database: the driver's own text goes to the log.
    """
    from psycopg import OperationalError, errors

    if isinstance(exc, errors.DiskFull):
        return "the disk is full"
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return "the database is read-only"
    if isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable)):
        return "the database stayed busy (another process is writing); try again"
    if isinstance(exc, OperationalError):
        log.warning("database error: %s", exc)
        return "the database is busy, restarting or unreachable; try again"
    return None


def storage_error(exc: BaseException) -> type[StorageError]:
    """TransientStorageError for what a retry can outlive (lock conflicts, a lost or restarting
    server, an administrator's shutdown), else StorageError."""
    from psycopg import OperationalError, errors

    if isinstance(exc, (errors.DiskFull, errors.ReadOnlySqlTransaction)):
        return StorageError
    return TransientStorageError if isinstance(exc, (OperationalError, errors.DeadlockDetected,
                                                     errors.SerializationFailure, errors.LockNotAvailable)) else StorageError


class ConnectionsMixin:
    """One connection per thread and process (a small pool without a dependency), closed together."""

    database_url: str

    def _init_connections(self) -> None:
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        # Every connection of this process with its thread, so close() reaches them all and
        # the connections of finished threads (one per request in Flask's threaded server) close.
        self._conns: list[tuple[threading.Thread, Any]] = []
        self._conns_pid = os.getpid()

    def _connect(self) -> psycopg.Connection:
        conn = open_connection(self.database_url)
        with self._conns_lock:
            if self._conns_pid != os.getpid():
                # Forked child (Celery prefork): the parent's connections stay the parent's.
                _FORKED_CONNECTIONS.extend(c for _, c in self._conns)
                self._conns, self._conns_pid = [], os.getpid()
            alive = []
            for thread, other in self._conns:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    with contextlib.suppress(Exception):
                        other.close()
            alive.append((threading.current_thread(), conn))
            self._conns = alive
        return conn

    def _conn(self) -> psycopg.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and (local.pid != os.getpid() or conn.closed or conn.broken):
            conn = None  # inherited through fork (parked by _connect) or lost (server restart)
        if conn is None:
            conn = self._connect()
            local.conn = conn
            local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close every connection this Store opened in this process."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
            mine = self._conns_pid == os.getpid()
        if mine:
            for _, conn in conns:
                with contextlib.suppress(Exception):
                    conn.close()
        else:
            _FORKED_CONNECTIONS.extend(c for _, c in conns)
        self._local = threading.local()

    def _q(self, sql: str, args: Any = None) -> psycopg.Cursor:
        """One statement on this thread's connection (autocommit); storage errors become StorageError."""
        import psycopg

        try:
            return self._conn().execute(sql, args)
        except psycopg.Error as exc:
            why = storage_reason(exc)
            if why is None:
                raise
            raise storage_error(exc)(f"The database could not be read: {why}.") from exc

    @contextlib.contextmanager
    def _write(self, what: str = "the change", lock: int | None = None) -> Iterator[psycopg.Connection]:
        """One transaction (optionally holding an advisory lock to its end); OperationalError -> StorageError."""
        import psycopg

        conn = self._conn()
        try:
            with conn.transaction():
                if lock is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
                yield conn
        except psycopg.Error as exc:
            why = storage_reason(exc)
            if why is None:
                raise
            raise storage_error(exc)(f"Could not save {what}: {why}.") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        """A repeatable-read transaction: one consistent snapshot across several SELECTs."""
        conn = self._conn()
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield conn

    @contextlib.contextmanager
    def _read_committed(self) -> Iterator[psycopg.Connection]:
        """A plain transaction, for settings that must last to its end only (SET LOCAL)."""
        conn = self._conn()
        with conn.transaction():
            yield conn
