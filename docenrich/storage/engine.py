"""One SQLAlchemy engine per database URL and process, with its pool, and storage errors in plain words."""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

import sqlalchemy as sa

from docenrich.storage.base import StorageError, TransientStorageError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10
# A connection per concurrent thread, as many as the process runs; 5 stay open between uses.
POOL_SIZE = 5
# Advisory lock keys (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises every write).
ADMISSION_LOCK = 0x646F6302
CONTENT_LOCK = 0x646F6303
_BUSY = "the database stayed busy for too long (another process is writing)"
# SQLite errors that mean "the storage is in trouble" rather than "the code is wrong", in plain words.
_SQLITE_TROUBLE = (
    ("disk is full", "the disk is full"), ("readonly", "the database is read-only"), ("locked", _BUSY),
    ("busy", _BUSY), ("disk i/o", "a disk I/O error occurred"),
    ("unable to open", "the database file could not be opened"),
)

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # SQLAlchemy's recipe for pools and os.fork(): a child (Celery's prefork pool, gunicorn's
    # workers) opens connections of its own and never closes the parent's.
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def sqlite_engine(path: Path) -> sa.Engine:
    """The engine of a SQLite file: pragmas on connect, and BEGIN issued by us (see _sqlite_begin)."""
    return _engine(str(sa.URL.create("sqlite", database=str(path))))


def postgres_engine(url: str) -> sa.Engine:
    """The engine of a PostgreSQL URL (postgresql:// or postgres://), through psycopg 3."""
    # Its dumper must be registered before the first connection copies psycopg's adapters.
    from docenrich.storage.postgres import binvec  # noqa: F401
    scheme, rest = url.split("://", 1)
    return _engine(f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url)


def _engine(url: str) -> sa.Engine:
    with _lock:
        if url in _engines:
            return _engines[url]
        common = {"pool_size": POOL_SIZE, "max_overflow": -1, "pool_use_lifo": True}
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
                                      **common)
            sa.event.listen(engine, "connect", _sqlite_connect)
            sa.event.listen(engine, "begin", _sqlite_begin)
        else:
            args = {} if "connect_timeout=" in url else {"connect_timeout": CONNECT_TIMEOUT_S}
            # Reads run in autocommit; a write asks for READ COMMITTED and so gets BEGIN ... COMMIT.
            engine = sa.create_engine(url, connect_args=args, isolation_level="AUTOCOMMIT", **common)
        _engines[url] = engine
        return engine


def _sqlite_connect(dbapi_conn, _record) -> None:
    # isolation_level None: the driver issues no BEGIN of its own, _sqlite_begin does, so a
    # write can take the lock up front (BEGIN IMMEDIATE; no deadlock-prone read->write upgrade).
    dbapi_conn.isolation_level = None
    for pragma in (f"busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}", "synchronous = NORMAL", "foreign_keys = ON"):
        dbapi_conn.execute(f"PRAGMA {pragma}")


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def failure(exc: BaseException) -> tuple[type[StorageError], str] | None:
    """(error class, human reason naming no server, user or path) for a storage error, else None (a bug)."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, sqlite3.Error):
        low = str(orig).lower()
        found = [why for marker, why in _SQLITE_TROUBLE if marker in low]
        if not found or not isinstance(orig, sqlite3.OperationalError):
            return None
        # Locked past the busy timeout may succeed later; a full disk will not.
        return (TransientStorageError if _BUSY in found else StorageError), found[0]
    try:
        from psycopg import OperationalError, errors
    except ImportError:
        return None
    if isinstance(orig, errors.DiskFull):
        return StorageError, "the disk is full"
    if isinstance(orig, errors.ReadOnlySqlTransaction):
        return StorageError, "the database is read-only"
    if isinstance(orig, (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable)):
        return TransientStorageError, "the database stayed busy (another process is writing); try again"
    if isinstance(orig, OperationalError):
        log.warning("database error: %s", orig)
        return TransientStorageError, "the database is busy, restarting or unreachable; try again"
    return None


def writing(conn: sa.Connection) -> sa.Connection:
    """conn set up for a write transaction: BEGIN IMMEDIATE on SQLite, READ COMMITTED on PostgreSQL."""
    if conn.dialect.name == "sqlite":
        return conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
    return conn.execution_options(isolation_level="READ COMMITTED")
