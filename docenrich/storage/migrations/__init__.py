"""The schema's one Alembic history for SQLite and PostgreSQL, applied when a store opens.

Every process opening a store runs `upgrade`; the first one does the work under the database's
write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), the others then find it done.
"""
from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from docenrich.storage.base import StorageError
from docenrich.storage.engine import writing
from docenrich.storage.migrations import legacy_postgres, legacy_sqlite

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).resolve().parent
# Held by the process migrating a PostgreSQL database until its transaction ends.
MIGRATE_LOCK = 0x646F6301


def _config(conn: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The newest revision this docenrich knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(conn: sa.Connection) -> str | None:
    """The database's revision (None before Alembic took it over)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> str:
    """Bring the schema to the newest revision, in one transaction; returns it."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # journal_mode is persistent in the file and cannot change inside a transaction.
            mode = conn.connection.driver_connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("SQLite refused WAL mode (got %r); concurrent writers will block more", mode)
        with writing(conn).begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
            _refuse_newer(conn)
            command.upgrade(_config(conn), "head")
            return current(conn)


def _refuse_newer(conn: sa.Connection) -> None:
    """StorageError for a database a newer docenrich has changed (a revision or legacy step we lack)."""
    legacy = legacy_sqlite if conn.dialect.name == "sqlite" else legacy_postgres
    revision = current(conn)
    script = ScriptDirectory.from_config(_config())
    known = {s.revision for s in script.walk_revisions()}
    if revision is None and legacy.legacy_version(conn) > legacy.LEGACY_VERSION:
        found = f"schema {legacy.legacy_version(conn)}"
    elif revision is not None and revision not in known:
        found = f"revision {revision}"
    else:
        return
    raise StorageError(f"The database was created by a newer docenrich ({found}, this one knows up to "
                       f"{script.get_current_head()}); upgrade docenrich.")
