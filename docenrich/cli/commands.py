"""The store commands of `docenrich` (docenrich.cli.main), also a Flask command group.

    ingest PATH…     add files (files, folders, globs) with the API's checks; --collection, --wait
    sync DIR…        keep a collection in line with folders; --dry-run, --keep-missing, --watch
    search QUESTION  a table of results (document, page, score), or --json
    export           a collection's or a document's snippets and vectors as JSONL or Parquet
    reembed          embed the snippets that lack a vector from the current embedder
    status           workers, models, queues, documents, collections
    cancel DOC_ID…   stop documents' ingestion; nothing of them stays searchable
    migrate          copy the SQLite store into PostgreSQL (pgvector), resumably

The same group answers `flask --app app docenrich COMMAND` (there migrate is `migrate-to-postgres`).
The commands use the app's store and reach the workers through `docenrich.client`, exactly
as the web app does; they need Redis and, to process anything, a running worker.
"""
from __future__ import annotations

import json
import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from docenrich import client, uploads
from docenrich.cli.admin import (
    cancel_command,
    export_command,
    require_redis,
    services,
    status_command,
)
from docenrich.cli.ingest import POLL_SECONDS, Item, Run, admit_file, find_files, refresh, summary
from docenrich.cli.migrate import migrate_command
from docenrich.cli.progress import Progress
from docenrich.cli.reembed import reembed_command
from docenrich.cli.sync import sync_command
from docenrich.context import MAX_CONTEXT, breadcrumb
from docenrich.filters import build_filter
from docenrich.storage import check_collection_name


def collection_option(value: str | None) -> str | None:
    """A checked collection name, or None."""
    if value is None:
        return None
    try:
        return check_collection_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("docenrich")
def docenrich_cli() -> None:
    """docenrich: ingest, sync, search, export, re-embed, status."""


for command in (reembed_command, export_command, status_command, migrate_command, cancel_command, sync_command):
    docenrich_cli.add_command(command)


@docenrich_cli.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@click.option("--collection", "-c", help="Put the files into this collection (created if new).")
@click.option("--wait/--no-wait", default=False, help="Follow extraction and embedding until every file is done.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Look into sub-folders.")
@with_appcontext
def ingest_command(paths: tuple[str, ...], collection: str | None, wait: bool, recursive: bool) -> None:
    """Add files: files, folders (their files of the kinds an upload accepts) and globs; stored files are skipped."""
    collection = collection_option(collection)
    files = find_files(paths, recursive)
    if not files:
        raise click.ClickException("No files found under the given paths.")
    require_redis()
    svc = services()
    run = Run([Item(path) for path in files])
    progress = Progress(run, sys.stderr, wait)
    limits = uploads.Limits.from_config(current_app.config)
    try:
        for item in run.items:
            admit_file(svc.store, item, limits, collection, progress.note)
            refresh(svc.store, run)
            progress.draw()
        while wait and refresh(svc.store, run):
            progress.draw()
            time.sleep(POLL_SECONDS)
        refresh(svc.store, run)
    except KeyboardInterrupt:
        run.interrupted = True
    progress.finish()
    for line in summary(run, wait):
        click.echo(line)
    failed = any(i.state == "failed" for i in run.tracked()) if wait else False
    if run.interrupted:
        sys.exit(130)
    if run.count("refused") or failed:
        sys.exit(1)


def hit_rows(result) -> list[dict]:
    """Search hits as plain rows for the table and for --json (with their neighbours when asked for)."""
    rows = []
    for h in result.hits:
        row = {"rank": h.rank, "score": h.rerank_normalized if h.rerank_normalized is not None else h.vector_score,
               "vector_score": h.vector_score, "rerank_score": h.rerank_score,
               "document": h.document.filename if h.document else h.snippet.document_id,
               "document_id": h.snippet.document_id, "page": h.snippet.page, "snippet_id": h.snippet.id,
               "ordinal": h.snippet.ordinal, "breadcrumb": breadcrumb(h.snippet, h.document.title if h.document else None),
               "text": h.snippet.text}
        if result.context:
            row["context_before"] = [neighbour_row(s) for s in h.before]
            row["context_after"] = [neighbour_row(s) for s in h.after]
        rows.append(row)
    return rows


def neighbour_row(snip) -> dict:
    """A neighbouring snippet as a plain row: the fields the API shows for one."""
    return {"snippet_id": snip.id, "ordinal": snip.ordinal, "page": snip.page, "kind": snip.kind, "text": snip.text}


def clip(text: str, room: int) -> str:
    """Text on one line, cut with an ellipsis to fit `room` characters."""
    text = " ".join(text.split())
    return text if len(text) <= room else text[: room - 1] + "…"


def table(rows: list[dict], width: int = 100) -> list[str]:
    """The results as an aligned text table."""
    name_w = min(max([8, *(len(r["document"]) for r in rows)]), 36)
    lines = [f"{'#':>3}  {'score':>6}  {'document':<{name_w}}  {'page':>4}  text"]
    for r in rows:
        name = r["document"] if len(r["document"]) <= name_w else r["document"][: name_w - 1] + "…"
        room = max(20, width - name_w - 24)
        # Neighbours sit above and below their result, marked ↑ (before) and ↓ (after) in reading order.
        lines += [f"{'↑':>{name_w + 17}}  {c['page']:>4}  {clip(c['text'], room)}" for c in r.get("context_before", ())]
        lines.append(f"{r['rank']:>3}  {r['score']:6.3f}  {name:<{name_w}}  {r['page']:>4}  {clip(r['text'], room)}")
        lines += [f"{'↓':>{name_w + 17}}  {c['page']:>4}  {clip(c['text'], room)}" for c in r.get("context_after", ())]
    return lines


@docenrich_cli.command("search")
@click.argument("question")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 100), help="How many results.")
@click.option("--collection", "-c", multiple=True, help="Search only these collections (repeat for several).")
@click.option("--document", multiple=True, help="Search only this document id (repeat for several).")
@click.option("--kind", multiple=True, help="Only snippets of this kind: text, table, figure, toc... (repeat).")
@click.option("--pages", help="Only these pages: 5, 5-9, 5- or -9.")
@click.option("--filename", help="Only documents whose file name matches this glob (* and ?), e.g. '*manual*'.")
@click.option("--uploaded-after", help="Only documents uploaded on or after this ISO date.")
@click.option("--uploaded-before", help="Only documents uploaded before this ISO date (a date: up to its end).")
@click.option("--rerank/--no-rerank", default=True, show_default=True, help="Rerank with the reranker when there is one.")
@click.option("--context", "context", default=0, show_default=True, type=click.IntRange(0, MAX_CONTEXT),
              help="Show this many neighbouring snippets before and after each result, in reading order.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@with_appcontext
def search_command(question: str, k: int, collection: tuple[str, ...], document: tuple[str, ...], kind: tuple[str, ...],
                   pages: str | None, filename: str | None, uploaded_after: str | None, uploaded_before: str | None,
                   rerank: bool, context: int, as_json: bool) -> None:
    """Search the snippets by meaning, within a filter: a table of document, page and score."""
    names = [collection_option(c) for c in collection] or None
    try:
        f = build_filter(collections=names, document_ids=document or None, kinds=kind or None, pages=pages,
                         filename=filename, uploaded_after=uploaded_after, uploaded_before=uploaded_before)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    require_redis()
    try:
        result = services().search(question, k, rerank, None, filter=f, context=context)
    except client.WorkerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    rows = hit_rows(result)
    if as_json:
        click.echo(json.dumps({"query": question, "filter": f.describe(), "reranked": result.reranked, "notes": result.notes,
                               "context": result.context, "timings_ms": result.timings_ms, "results": rows},
                              ensure_ascii=False, indent=2))
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo("\n".join(table(rows)) if rows else "Nothing found.")
