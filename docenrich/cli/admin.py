"""The command line's `export` and `status` commands (see docenrich.cli.commands)."""
from __future__ import annotations

import json
import sys
from collections import Counter

import click
from flask import current_app
from flask.cli import with_appcontext

from docenrich import telemetry
from docenrich.web.exports import parquet_chunks


def services():
    """The app's shared Services."""
    return current_app.extensions["docenrich"]


def require_redis() -> None:
    """Stop with a clear message while Redis is unreachable."""
    status = services().queue_status()
    if not status["ok"]:
        raise click.ClickException(f"The task queue (Redis) is unreachable: {status['error']}")


@click.command("cancel")
@click.argument("doc_ids", nargs=-1, required=True)
@with_appcontext
def cancel_command(doc_ids: tuple[str, ...]) -> None:
    """Stop the ingestion of documents (queued, extracting or embedding); nothing of them stays searchable."""
    require_redis()
    failed = False
    for doc_id in doc_ids:
        doc = services().store.get_document(doc_id)
        if doc is None:
            click.echo(f"{doc_id}: no such document", err=True)
            failed = True
        elif services().cancel(doc_id) is None:
            click.echo(f"{doc_id}: already {doc.state}; nothing to cancel", err=True)
            failed = True
        else:
            click.echo(f"{doc_id}: cancelled ({doc.filename})")
    if failed:
        sys.exit(1)


@click.command("export")
@click.option("--collection", "-c", help="Export this collection.")
@click.option("--document", "-d", help="Export this document id.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="File to write; - is standard output.")
@with_appcontext
def export_command(collection: str | None, document: str | None, fmt: str, output: str) -> None:
    """Write a collection's or a document's snippets with their vectors as JSONL or Parquet."""
    store = services().store
    if bool(collection) == bool(document):
        raise click.UsageError("Give exactly one of --collection or --document.")
    if collection and store.get_collection(collection) is None:
        raise click.ClickException(f"There is no collection named {collection!r}.")
    if document and store.get_document(document) is None:
        raise click.ClickException(f"There is no document with id {document!r}.")
    if fmt == "parquet" and output == "-" and sys.stdout.isatty():
        raise click.UsageError("Parquet is binary: give --output FILE or redirect standard output.")
    rows = store.collection_export_rows(collection) if collection else store.export_rows(document)
    count = 0

    def counted():
        nonlocal count
        for row in rows:
            count += 1
            yield row

    with click.open_file(output, "wb") as out:
        if fmt == "jsonl":
            for row in counted():
                out.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
        else:
            for chunk in parquet_chunks(counted()):
                out.write(chunk)
    click.echo(f"{count} snippets exported{'' if output == '-' else ' to ' + output}.", err=True)


def gather_status() -> dict:
    """Workers and their models, queues, documents by state, collections, the last hour's ingestion."""
    svc = services()
    require_redis()
    models = svc.queue_status()["models"]
    workers = {}
    for name in sorted(set(svc.workers_online()) | set(models)):
        info = models.get(name) or {}
        kind = info.get("resident")
        workers[name] = {"resident": kind, "device": info.get("device"),
                         "model": ((info.get("models") or {}).get(kind) or {}).get("effective") if kind else None}
    hour = telemetry.throughput(svc.redis, 60)
    return {
        "workers": workers,
        "queues": svc.queue_lengths(),
        "documents": dict(Counter(d.state for d in svc.store.list_documents())),
        "collections": {c.name: {"documents": c.documents, "snippets": c.snippets} for c in svc.store.list_collections()},
        "last_hour": {k: sum(m[k] for m in hour) for k in ("documents", "pages", "snippets")},
    }


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@with_appcontext
def status_command(as_json: bool) -> None:
    """Workers and the model each holds, queue backlog, documents, collections."""
    status = gather_status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo("Workers:" if status["workers"] else "Workers: none online")
    for name, w in status["workers"].items():
        holds = f"holds the {w['resident']} {w['model']} on {w['device']}" if w["resident"] else "no model resident"
        click.echo(f"  {name}: {holds}")
    click.echo("Queues: " + ", ".join(f"{q} {n}" for q, n in status["queues"].items()))
    click.echo("Documents: " + (", ".join(f"{s} {n}" for s, n in sorted(status["documents"].items())) or "none"))
    click.echo("Collections: " + (", ".join(f"{n} ({c['documents']})" for n, c in status["collections"].items()) or "none"))
    h = status["last_hour"]
    click.echo(f"Last hour: {h['documents']} documents, {h['pages']} pages, {h['snippets']} snippets stored")
