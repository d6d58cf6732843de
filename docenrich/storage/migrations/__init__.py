"""The schema's one Alembic history for SQLite and PostgreSQL, applied when a store opens (docs/storage.md).

Every process opening a store runs `upgrade`; the first one does the work under the database's
write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), the others then find it done.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from docenrich.records import DEFAULT_COLLECTION
from docenrich.storage.base import StorageError
from docenrich.storage.engine import writing
from docenrich.storage.tables import collections, counters

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).resolve().parent
# Held by the process migrating a PostgreSQL database until its transaction ends.
MIGRATE_LOCK = 0x646F6301
# The schema versions of the migrations before Alembic the baseline revision stands for (PostgreSQL's
# 3 only added the renditions table, which revision 0003 creates where it is missing).
LEGACY_VERSIONS = {"sqlite": (6,), "postgresql": (2, 3)}
BASELINE = "0001"
_COUNTERS = ("vectors_version", "vectors_epoch", "snippets_total", "snippet_id_seq")


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


def legacy_version(conn: sa.Connection) -> int:
    """The schema version the migrations before Alembic recorded (0: none)."""
    if conn.dialect.name == "sqlite":
        return int(conn.exec_driver_sql("PRAGMA user_version").scalar())
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar() or 0)


def upgrade(engine: sa.Engine, create: Callable[[sa.Connection], None]) -> str:
    """Bring the schema to the newest revision in one transaction (`create` makes a new database's); returns it."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # journal_mode is persistent in the file and cannot change inside a transaction.
            mode = conn.connection.driver_connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("SQLite refused WAL mode (got %r); concurrent writers will block more", mode)
        with writing(conn).begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
            _adopt(conn, create)
            command.upgrade(_config(conn), "head")
            return current(conn)


def _adopt(conn: sa.Connection, create: Callable[[sa.Connection], None]) -> None:
    """Create a new database, or stamp one from before Alembic; StorageError for one we cannot take."""
    script = ScriptDirectory.from_config(_config())
    revision, legacy = current(conn), legacy_version(conn)
    if revision is not None:
        if revision not in {s.revision for s in script.walk_revisions()}:
            raise StorageError(f"The database was created by a newer docenrich (revision {revision}, this one "
                               f"knows up to {script.get_current_head()}); upgrade docenrich.")
    elif legacy == 0 and not sa.inspect(conn).has_table("documents"):
        create(conn)
        conn.execute(sa.insert(counters), [{"name": n, "value": 0} for n in _COUNTERS])
        conn.execute(sa.insert(collections).values(name=DEFAULT_COLLECTION, description="", created_at=time.time()))
        command.stamp(_config(conn), "head")
        log.info("new database created at schema revision %s", script.get_current_head())
    elif legacy in LEGACY_VERSIONS[conn.dialect.name]:
        command.stamp(_config(conn), BASELINE)
    else:
        newer = legacy > max(LEGACY_VERSIONS[conn.dialect.name])
        raise StorageError(
            f"The database was created by {'a newer' if newer else 'an older'} docenrich (schema {legacy}); "
            + ("upgrade docenrich." if newer else "open it once with the docenrich release before the Alembic "
               f"migrations, which brings it to schema {max(LEGACY_VERSIONS[conn.dialect.name])}, then with this one."))
