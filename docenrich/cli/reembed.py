"""Embed every stored snippet that has no vector from the worker's current embedder.

    docenrich reembed [--batch 64] [--rechunk]

Run it after switching EMBEDDER_MODEL: search only looks at vectors of the embedder that
embeds the query, so older snippets stay invisible until they are re-embedded. Vectors of
other embedders are kept. With --rechunk every finished document is cut into snippets again
(after a change to chunking, or to an embedder that reads a different number of tokens) and
embedded through the workers; the bar follows its page batches. Needs running workers.
"""
from __future__ import annotations

import sys
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from docenrich import client
from docenrich.records import embedding_text
from docenrich.storage.rows import text_digest


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
        embedded = client.call(client.EMBED, ([embedding_text(s) for s in pending],), "embedding",
                               interactive=False, kwargs={"with_model": True})
        vectors = embedded["embedding"]
        if vectors.shape[1] != dim or embedded["model"] != embedder:
            raise RuntimeError(f"the worker switched models mid-run ({embedded['model']}, {vectors.shape[1]} "
                               "dimensions); run again")
        ids = [s.meta["snippet_id"] for s in pending]
        # The store checks each text is still the one embedded: a snippet re-extracted meanwhile
        # keeps no vector of its old text (it is embedded again by its own run).
        digests = {sid: text_digest(s.text) for sid, s in zip(ids, pending)}
        if embedded.get("sparse"):
            # Sparse weights first: a snippet counts as embedded once its vector is stored.
            store.save_sparse(list(zip(ids, embedded["sparse"])), embedder, digests)
        store.save_vectors(list(zip(ids, vectors)), embedder, digests)
        after = pending[-1].meta["snippet_id"]
        done += len(pending)
        total = max(total, done)
        out.write("\r" + progress_bar(done, total, started))
        out.flush()
    if done:
        out.write("\n")
    return embedder, done


def rechunk(store, out=sys.stderr, poll: float = 1.0, timeout: float = 86400.0,
            doc_ids: list[str] | None = None) -> int:
    """Extract and embed every finished document (or those of doc_ids) again; returns how many, once done."""
    client.embed_query("docenrich re-chunking probe")  # fail fast, in words, without a worker
    finished = [d.id for d in store.list_documents() if d.state in ("ready", "failed")]  # a cancelled one has nothing
    ids = [i for i in finished if doc_ids is None or i in doc_ids]
    started = time.monotonic()
    for doc_id in ids:
        if store.restart_document(doc_id) is not None:
            client.submit_document(doc_id)
    while True:
        docs = [d for d in (store.get_document(i) for i in ids) if d is not None]
        total = sum(d.batches_total or max(1, d.pages // 8) for d in docs)
        done = sum(d.batches_done for d in docs)
        out.write("\r" + progress_bar(done, total, started).replace("snippets", "page batches"))
        out.flush()
        if all(d.finished for d in docs):  # a document cancelled meanwhile counts as done
            break
        if time.monotonic() - started > timeout:
            raise RuntimeError("re-chunking did not finish in time; the workers keep going")
        time.sleep(poll)
    out.write("\n")
    return len(docs)


@click.command("reembed")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1), help="snippets per embedding call")
@click.option("--rechunk", is_flag=True, help="cut every document into snippets again, then embed them")
@with_appcontext
def reembed_command(batch: int, rechunk: bool) -> None:
    """Embed the snippets that have no vector from the worker's current embedder."""
    store = current_app.extensions["docenrich"].store
    try:
        if rechunk:
            click.echo(f"{rechunk(store)} documents cut into snippets and embedded again.")
        embedder, done = reembed(store, batch)
    except client.WorkerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{done} snippets embedded with {embedder}." if done else f"Every snippet already has a vector from {embedder}.")
