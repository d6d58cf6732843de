"""A fast, in-process run of one evaluation set, for working on chunking and search between runs of
`make eval`: the manuals are extracted with the pipeline's own code, embedded by the bundled model in
this process (vectors cached by text), stored in a SQLite store, and searched by `docenrich.search`
with the query embedded here instead of by a worker. No Redis, worker or web process: the numbers
match `make eval`'s dense, lexical and hybrid rows up to the worker's batching, not its timings.

    python bench/eval_quick.py --set reference [--questions FILE] [--naive] [--env NAME=VALUE]
                               [--variant LABEL:NAME=VALUE,...]

Each --variant searches the same store again with its settings (search-time settings only). Tune on
a development set (--questions bench/eval/reference/dev-questions.jsonl), not on the frozen one.
--naive adds the 180-word-window baselines of `make eval`.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, eval_retrieval  # noqa: E402

log = logging.getLogger("bench.eval_quick")
CACHE = common.CACHE_DIR / "eval-quick-vectors.pkl"


class Embedder:
    """The bundled model in this process, its vectors cached by text across runs."""

    def __init__(self):
        from sentence_transformers import SentenceTransformer

        from docenrich.config import bundled_model_path

        self.model = SentenceTransformer(bundled_model_path(), device="cpu")
        self.cache: dict[str, object] = pickle.loads(CACHE.read_bytes()) if CACHE.exists() else {}

    def __call__(self, texts: list[str]):
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self.cache}.items())
        if missing:
            vectors = self.model.encode([t for _, t in missing], batch_size=32, normalize_embeddings=True,
                                        show_progress_bar=False)
            self.cache.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
        return [self.cache[k] for k in keys]

    def save(self) -> None:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_bytes(pickle.dumps(self.cache))


def build_store(folder: Path, docs: dict[str, Path], embed: Embedder):
    """A SQLite store holding every manual's snippets with their vectors, extracted as the workers do."""
    from docenrich.config import get_settings
    from docenrich.models.tokens import embedder_counter
    from docenrich.pdf import inspect_pdf, iter_snippet_batches
    from docenrich.records import embedding_text
    from docenrich.storage import SQLiteStore

    settings = get_settings()
    counter = embedder_counter(settings)
    store = SQLiteStore(folder)
    for name, path in docs.items():
        data = path.read_bytes()
        doc, _ = store.add_document(data, path.name, inspect_pdf(data), batch_pages=settings.snippet_batch_pages)
        batches = iter_snippet_batches(data, doc.id, batch_pages=settings.snippet_batch_pages, images=False,
                                       target_tokens=settings.snippet_target_tokens,
                                       overlap_tokens=settings.snippet_overlap_tokens, tables=settings.pdf_tables,
                                       count_tokens=counter, max_tokens=counter.max_tokens if counter else None)
        count = 0
        for index, batch in enumerate(batches):
            for s, v in zip(batch, embed([embedding_text(s) for s in batch]), strict=True):
                s.embedding, s.embedding_model = v, common.BUNDLED_EMBEDDER
            store.save_batch(doc.id, index, batch)
            count += len(batch)
        log.info("%s: %d snippets", name, count)
    return store


def _patch(settings: dict[str, str]) -> list[tuple[object, str, object]]:
    """Experiments on constants: W_<list>=w sets a fusion weight, BM25=a/b the FTS5 column weights."""
    from docenrich import search
    from docenrich.storage.sqlite import store as lexical

    saved = [(search, "FUSION_WEIGHTS", dict(search.FUSION_WEIGHTS)), (lexical, "_BM25_WEIGHTS", lexical._BM25_WEIGHTS)]
    for name, value in list(settings.items()):
        if name.startswith("W_"):
            search.FUSION_WEIGHTS[name[2:].lower()] = float(settings.pop(name))
        elif name == "BM25":
            lexical._BM25_WEIGHTS = ", ".join(settings.pop(name).split("/"))
    return saved


def _restore(saved: list[tuple[object, str, object]]) -> None:
    for module, name, value in saved:
        setattr(module, name, value)


def report(label: str, ranked: dict[str, dict[str, list[str]]], questions) -> None:
    """One line per mode: hit@1, hit@5, MRR@10 and the questions outside the top 5."""
    for mode, by_id in ranked.items():
        ranks = [eval_retrieval.first_hit(by_id[q.id], q.needles) for q in questions]
        m = eval_retrieval.metrics(ranks)
        misses = [q.id for q, r in zip(questions, ranks, strict=True) if r is None or r > 5]
        print(f"{label:12s} {mode:8s} hit@1 {m['hit@1']:.2f} hit@5 {m['hit@5']:.2f} MRR@10 {m['mrr@10']:.2f}  "
              f"outside top 5: {' '.join(misses)}", flush=True)


def rankings(store, questions, embed: Embedder, modes=("dense", "lexical", "hybrid")
             ) -> dict[str, dict[str, list[str]]]:
    """Each mode's top-10 texts per question, through docenrich.search with the query embedded here."""
    from docenrich import client, search

    client.embed_query_sparse = lambda text, timeout=None: (embed([text])[0], common.BUNDLED_EMBEDDER, None)
    out: dict[str, dict[str, list[str]]] = {}
    for mode in modes:
        out[mode] = {}
        for q in questions:
            result = search.search(store, store.vector_index, q.question, k=eval_retrieval.DEPTH, rerank=False,
                                   mode=mode, worker_status=lambda: {})
            out[mode][q.id] = [h.snippet.text for h in result.hits]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="reference", choices=sorted(eval_retrieval.SETS))
    parser.add_argument("--questions", type=Path, default=None, help="questions file (default: the set's frozen one)")
    parser.add_argument("--naive", action="store_true", help="also rank the naive 180-word-window baselines")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=VALUE,...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.update(dict(item.split("=", 1) for item in args.env))
    common.setup_environment()
    from docenrich.config import get_settings

    started = time.monotonic()
    docs = eval_retrieval.fetch_docs(args.set)
    questions = eval_retrieval.load_questions(args.questions or eval_retrieval.SETS[args.set])
    embed = Embedder()
    if args.naive:
        windows = [w for path in docs.values() for w in eval_retrieval.page_windows(path)]
        naive = eval_retrieval.Naive(windows, embed)
        report("naive", {m: {q.id: naive.ranking(m, q.question) for q in questions}
                         for m in ("dense", "lexical", "fused")}, questions)
    with tempfile.TemporaryDirectory() as folder:
        store = build_store(Path(folder), docs, embed)
        embed.save()
        report("defaults", rankings(store, questions, embed), questions)
        for variant in args.variant:
            label, _, pairs = variant.partition(":")
            saved = dict(os.environ)
            settings = dict(item.split("=", 1) for item in pairs.split(",") if item)
            patched = _patch(settings)
            os.environ.update(settings)
            get_settings.cache_clear()
            report(label, rankings(store, questions, embed, modes=("hybrid",)), questions)
            os.environ.clear()
            os.environ.update(saved)
            _restore(patched)
            get_settings.cache_clear()
    print(f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
