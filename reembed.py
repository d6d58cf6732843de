"""Embed every stored snippet that has no vector from the worker's current embedder.

    python reembed.py [--batch 64] [--data-dir DIR]

Run it after switching EMBEDDER_MODEL: search only looks at vectors of the embedder that
embeds the query, so older snippets stay invisible until they are re-embedded. Vectors of
other embedders are kept. Needs a running model worker.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

import bge
from celery_worker import _embedding_text
from settings import get_settings
from store import Store

log = logging.getLogger(__name__)


def progress_bar(done: int, total: int, started: float, width: int = 30) -> str:
    """One line of a plain-text progress bar."""
    fraction = done / total if total else 1.0
    filled = int(round(width * fraction))
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} snippets {fraction:4.0%}  {rate:.1f}/s"


def reembed(store: Store, batch: int = 64, out=sys.stderr) -> tuple[str, int]:
    """Embed the missing snippets in batches; returns (embedder name, snippets embedded)."""
    probe, embedder = bge.embed_query("docenrich re-embedding probe")
    dim = len(probe)
    # Upper bound for the bar: every snippet minus those that already have this embedder's vector.
    total = sum(d.snippet_count for d in store.list_documents()) - store.embedder_counts().get(embedder, 0)
    started, done, after = time.monotonic(), 0, 0
    while pending := store.snippets_needing_vectors(embedder, batch, after_id=after):
        vectors = bge.embed([_embedding_text(s) for s in pending])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="snippets per embedding call (default 64)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: DATA_DIR)")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    store = Store(args.data_dir or get_settings().data_dir)
    try:
        embedder, done = reembed(store, args.batch)
    except bge.WorkerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"{done} snippets embedded with {embedder}." if done else f"Every snippet already has a vector from {embedder}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
