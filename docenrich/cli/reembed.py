"""Embed every stored snippet that has no vector from the worker's current embedder.

    flask --app app docenrich reembed [--batch 64]

Run it after switching EMBEDDER_MODEL: search only looks at vectors of the embedder that
embeds the query, so older snippets stay invisible until they are re-embedded. Vectors of
other embedders are kept. Needs a running model worker.
"""
from __future__ import annotations

import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from docenrich import client
from docenrich.records import embedding_text


def progress_bar(done: int, total: int, started: float, width: int = 30) -> str:
    """One line of a plain-text progress bar."""
    fraction = done / total if total else 1.0
    filled = int(round(width * fraction))
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} snippets {fraction:4.0%}  {rate:.1f}/s"


def reembed(store, batch: int = 64, out=sys.stderr) -> tuple[str, int]:
    """Embed the missing snippets in batches; returns (embedder name, snippets embedded)."""
    probe, embedder = client.embed_query("docenrich re-embedding probe")
    dim = len(probe)
    # Upper bound for the bar: every snippet minus those that already have this embedder's vector.
    total = sum(d.snippet_count for d in store.list_documents()) - store.embedder_counts().get(embedder, 0)
    started, done, after = time.monotonic(), 0, 0
    while pending := store.snippets_needing_vectors(embedder, batch, after_id=after):
        vectors = client.call(client.EMBED, ([embedding_text(s) for s in pending],), "embedding", interactive=False)
        if vectors.shape[1] != dim:
            raise RuntimeError(f"the worker switched models mid-run ({vectors.shape[1]} != {dim} dimensions); run again")
        store.save_vectors([(s.meta["snippet_id"], v) for s, v in zip(pending, vectors)], embedder)
        after = pending[-1].meta["snippet_id"]
        done += len(pending)
        total = max(total, done)
        out.write("\r" + progress_bar(done, total, started))
        out.flush()
    if done:
        out.write("\n")
    return embedder, done


@click.command("reembed")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1), help="snippets per embedding call")
@with_appcontext
def reembed_command(batch: int) -> None:
    """Embed the snippets that have no vector from the worker's current embedder."""
    store = current_app.extensions["docenrich"].store
    try:
        embedder, done = reembed(store, batch)
    except client.WorkerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{done} snippets embedded with {embedder}." if done else f"Every snippet already has a vector from {embedder}.")
