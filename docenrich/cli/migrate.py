"""`migrate-to-postgres`: copy the SQLite store (DATA_DIR) into a PostgreSQL database with pgvector."""
from __future__ import annotations

import logging

import click
from flask import current_app
from flask.cli import with_appcontext

log = logging.getLogger(__name__)


@click.command("migrate-to-postgres")
@click.option("--database-url", help="postgresql://… to copy into (default: the DATABASE_URL setting).")
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True),
              help="The SQLite store to copy (default: the DATA_DIR setting).")
@click.option("--thumbnails/--no-thumbnails", default=True, show_default=True,
              help="Copy the cached page renderings too (else they are drawn again on first view).")
@click.option("--limit", type=click.IntRange(min=1), help="Copy at most this many documents in this run.")
@with_appcontext
def migrate_command(database_url: str | None, data_dir: str | None, thumbnails: bool, limit: int | None) -> None:
    """Copy documents, collections, snippets, images, vectors and sparse weights into PostgreSQL.

    Each document is copied in one transaction and documents already there are skipped: an
    interrupted run is simply started again, and a second run copies nothing.
    """
    from docenrich.storage import SQLiteStore, is_postgres_url
    from docenrich.storage.postgres import PostgresStore
    from docenrich.storage.postgres.copy import copy_store, pending_documents

    url = database_url or current_app.config.get("DATABASE_URL") or ""
    if not is_postgres_url(url):
        raise click.UsageError("Give --database-url postgresql://… (or set DATABASE_URL).")
    source = SQLiteStore(data_dir or current_app.config["DATA_DIR"])
    target = PostgresStore(url)
    try:
        todo = len(pending_documents(source, target)[0][:limit])
        with click.progressbar(length=todo, label=f"Copying {todo} documents", show_pos=True) as bar:
            result = copy_store(source, target, thumbnails=thumbnails, limit=limit, step=lambda *_: bar.update(1))
    finally:
        source.close()
        target.close()
    click.echo(f"Copied {result['copied']} documents; {result['skipped']} were already there; "
               f"{result['left']} left to copy.")
