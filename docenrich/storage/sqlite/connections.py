"""Per-thread, fork-safe SQLite connections and the transactions built on them."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from docenrich.storage.base import StorageError, TransientStorageError, reason
from docenrich.storage.sqlite.schema import connect

# SQLite errors that mean "the storage is in trouble" rather than "the code is wrong".
_STORAGE_SQLITE_MARKERS = ("disk is full", "readonly", "locked", "busy", "disk i/o", "unable to open")

# Connections inherited through fork must never be used (SQLite forbids it) nor closed
# by the child's garbage collector; parking them here keeps them alive and untouched.
_FORKED_CONNECTIONS: list[sqlite3.Connection] = []


def is_storage_error(exc: sqlite3.Error) -> bool:
    """Whether a SQLite error is about the storage (full, read-only, busy) rather than a bug."""
    low = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(m in low for m in _STORAGE_SQLITE_MARKERS)


def _error(exc: sqlite3.Error) -> type[StorageError]:
    """A write that found the database locked past the busy timeout may succeed later; a full disk will not."""
    low = str(exc).lower()
    return TransientStorageError if "locked" in low or "busy" in low else StorageError


class ConnectionsMixin:
    """One connection per thread and process, closed together; BEGIN IMMEDIATE writes."""

    db_path: Path

    def _init_connections(self) -> None:
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        # Every connection opened in this process, with its thread, so close() can reach
        # them all and connections of finished threads get closed (Flask's threaded server
        # starts a thread per request; without pruning each one would leak file handles).
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._conns_pid = os.getpid()

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.db_path)
        with self._conns_lock:
            if self._conns_pid != os.getpid():
                # Forked child: the parent's connections must be neither used nor closed here.
                _FORKED_CONNECTIONS.extend(c for _, c in self._conns)
                self._conns, self._conns_pid = [], os.getpid()
            alive = []
            for thread, other in self._conns:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    with contextlib.suppress(sqlite3.Error):
                        other.close()
            alive.append((threading.current_thread(), conn))
            self._conns = alive
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid != os.getpid():
            conn = None  # inherited through fork; _connect parks it
        if conn is None:
            conn = self._connect()
            local.conn = conn
            local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close every connection this Store opened in this process."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for _, conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _write(self, what: str = "the change") -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; storage-type SQLite errors become StorageError."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if is_storage_error(exc):
                raise _error(exc)(f"Could not save {what}: {reason(exc)}.") from exc
            raise
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and is_storage_error(exc):
                raise _error(exc)(f"Could not save {what}: {reason(exc)}.") from exc
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot across several SELECTs."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")
