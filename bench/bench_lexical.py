"""Lexical (BM25) and learned-sparse retrieval at scale, on the embedded default (SQLite).

    python bench/bench_lexical.py [--sizes 10000,100000,1000000] [--sparse-max 100000]
                                  [--out bench/LEXICAL.md]

The snippets are real manual text: spans of 60 to 120 words cut at random offsets from the
reference set's manuals (bench/eval/fetch_docs.sh), 1,000 per document, inserted into a
SQLiteStore's tables, whose triggers index them for FTS5 as they index the pipeline's rows.
Learned-sparse postings are BGE-M3-shaped (each distinct word-piece of the snippet, weighted by its
rarity as the model weighs it) from the bundled model's tokenizer, inserted with them. The queries
are the reference development questions. For each size: BM25 and sparse top-50 p50/p95, unfiltered and
with a filter that keeps 1% of the documents, and the store's load rate.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, eval_retrieval  # noqa: E402
from bench.report import machine_info, machine_line  # noqa: E402
from docenrich.storage import SQLiteStore  # noqa: E402

log = logging.getLogger("bench.lexical")
PER_DOC = 1000
DEPTH = 50
EMBEDDER = "bench-sparse"
QUESTIONS = ROOT / "bench" / "eval" / "reference" / "dev-questions.jsonl"


def corpus_words() -> list[str]:
    """Every word of the reference manuals, in reading order."""
    import pymupdf

    words: list[str] = []
    for path in eval_retrieval.fetch_docs("reference").values():
        with pymupdf.open(path) as doc:
            for page in doc:
                words.extend(page.get_text().split())
    return words


def spans(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n texts of 60 to 120 consecutive words from random offsets."""
    lengths = rng.integers(60, 121, n)
    starts = rng.integers(0, len(words) - 121, n)
    return [" ".join(words[s:s + k]) for s, k in zip(starts, lengths, strict=True)]


class SparseWeights:
    """BGE-M3-shaped sparse weights: the text's distinct word-pieces, weighted as the model weighs them,
    by rarity (frequent pieces such as "the" get a few hundredths, rare identifiers up to 0.35)."""

    def __init__(self, sample: list[str], seed: int = 5):
        from transformers import AutoTokenizer

        from docenrich.config import bundled_model_path

        self.tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
        self.rng = np.random.default_rng(seed)
        df = np.ones(self.tokenizer.vocab_size)
        for row in self._ids(sample):
            df[sorted(set(row))] += 1
        idf = np.log((len(sample) + 1) / df)
        self.scale = 0.35 * idf / idf.max()

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=512)["input_ids"]

    def __call__(self, texts: list[str]) -> list[dict[int, float]]:
        out = []
        for row in self._ids(texts):
            tokens = sorted(set(row))
            weights = np.maximum(self.scale[tokens] * self.rng.uniform(0.7, 1.0, len(tokens)), 0.01)
            out.append(dict(zip(tokens, weights.round(4).tolist(), strict=True)))
        return out


def load(store, texts: list[str], sparse: SparseWeights | None) -> tuple[list[str], float]:
    """Store the texts as documents of PER_DOC snippets; their ids and the snippets/s of the load.

    The rows go in by multi-row INSERTs, so that a million load in minutes; SQLite's triggers index
    them for FTS5 as they index the pipeline's rows (save_batch checks and upserts them one by one)."""
    import json

    doc_ids = []
    t0 = time.perf_counter()
    for d in range(0, len(texts), PER_DOC):
        doc, _ = store.add_document(f"%PDF-1.4\n% lexical {d}\n%%EOF\n".encode(), f"manual-{d // PER_DOC}.pdf")
        chunk = texts[d:d + PER_DOC]
        rows = [(d + i + 1, doc.id, i, 0, 1 + i // 10, None, t, "text", json.dumps({"heading": f"Topic {d + i // 10}"}))
                for i, t in enumerate(chunk)]
        with store.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO snippets (id, document_id, ordinal, batch_index, page, bbox, text, kind, "
                                 "meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if sparse is not None:
                postings = [(EMBEDDER, t, sid, w) for (sid, *_), weights in zip(rows, sparse(chunk), strict=True)
                            for t, w in weights.items()]
                conn.exec_driver_sql("INSERT INTO sparse_postings (embedder, token, snippet_id, weight) "
                                     "VALUES (?, ?, ?, ?)", postings)
                # As the store's own writes log them, for the sparse postings index.
                conn.exec_driver_sql("INSERT INTO sparse_changes (embedder, snippet_id) VALUES (?, ?)",
                                     [(EMBEDDER, sid) for sid, *_ in rows])
        doc_ids.append(doc.id)
    return doc_ids, len(texts) / (time.perf_counter() - t0)


def timed(fn, queries: list) -> tuple[float, float]:
    """p50 and p95 in milliseconds of fn(query) over the queries (after one warm-up pass)."""
    for q in queries:
        fn(q)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def run_size(n: int, words: list[str], questions: list[str], with_sparse: bool, sql_sparse: bool,
             work: Path) -> dict:
    """Load n snippets into a fresh store and time the retrievers, unfiltered and with a 1% filter: SQL's
    (FTS5, and the sparse postings table where sql_sparse) and the shared postings indexes."""
    from docenrich.filters import SearchFilter

    rng = np.random.default_rng(n)
    texts = spans(words, n, rng)
    sparse = SparseWeights(texts[:20000]) if with_sparse else None
    store = SQLiteStore(work / f"store-{n}", lexical_min_rows=-1)  # FTS5 alone
    doc_ids, rate = load(store, texts, sparse)
    keep = SearchFilter(document_ids=tuple(rng.choice(doc_ids, max(1, len(doc_ids) // 100), replace=False)))
    row = {"n": n, "load_per_s": rate}
    row["bm25"] = timed(lambda q: store.lexical_search(q, DEPTH), questions)
    row["bm25_1pct"] = timed(lambda q: store.lexical_search(q, DEPTH, filter=keep), questions)
    row.update(word_index(store, questions, keep))
    if sparse is not None:
        weights = dict(zip(questions, sparse(questions), strict=True))
        if sql_sparse:
            row["sparse"] = timed(lambda q: store.sparse_search(EMBEDDER, weights[q], DEPTH), questions)
            row["sparse_1pct"] = timed(lambda q: store.sparse_search(EMBEDDER, weights[q], DEPTH, filter=keep),
                                       questions)
        row.update(sparse_index(store, weights, keep))
    store.close()
    log.info("%s", row)
    return row


def word_index(fts: SQLiteStore, questions: list[str], keep) -> dict:
    """The shared word index over the same store, as another process opens it: its build time, size,
    timings, and how many of FTS5's top 10 it returns."""
    from docenrich.textindex.files import sync

    store = SQLiteStore(fts.data_dir, lexical_min_rows=0)
    t0 = time.perf_counter()
    sync(store.words.source, store.words.files)
    out = {"words_build_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    assert store.words.refresh()
    store.lexical_search(questions[0], DEPTH)
    out["words_first_s"] = time.perf_counter() - t0
    out["words_mib"] = sum(p.stat().st_size for p in store.words.files.dir.iterdir()) / 2**20
    out["words"] = timed(lambda q: store.lexical_search(q, DEPTH), questions)
    out["words_1pct"] = timed(lambda q: store.lexical_search(q, DEPTH, filter=keep), questions)
    overlap = []
    for q in questions:
        ref = {i for i, _ in fts.lexical_search(q, 10)}
        overlap.append(len(ref & {i for i, _ in store.lexical_search(q, 10)}) / max(len(ref), 1))
    out["words_overlap"] = float(np.mean(overlap))
    store.close()
    return out


def sparse_index(sql: SQLiteStore, weights: dict, keep) -> dict:
    """The shared sparse postings index over the same store, as another process opens it."""
    from docenrich.textindex.files import sync
    from docenrich.textindex.index import SparseIndex

    store = SQLiteStore(sql.data_dir, lexical_min_rows=0)
    index = store._sparse.setdefault(EMBEDDER, SparseIndex(store, EMBEDDER, store.data_dir, 0))
    t0 = time.perf_counter()
    sync(index.source, index.files)
    out = {"sparse_build_s": time.perf_counter() - t0}
    out["sparse_mib"] = sum(p.stat().st_size for p in index.files.dir.iterdir()) / 2**20
    questions = list(weights)
    out["sparse_index"] = timed(lambda q: store.sparse_search(EMBEDDER, weights[q], DEPTH), questions)
    out["sparse_index_1pct"] = timed(lambda q: store.sparse_search(EMBEDDER, weights[q], DEPTH, filter=keep), questions)
    store.close()
    return out


def report(rows: list[dict], seconds: float) -> str:
    """bench/LEXICAL.md."""
    def cell(row, key):
        return f"{row[key][0]:.1f} / {row[key][1]:.1f}" if key in row else "not run"

    lines = ["# Lexical and sparse retrieval at scale", "",
             f"Generated by `python bench/bench_lexical.py` in {seconds:.0f} s on {machine_line(machine_info())}.", "",
             "SQLite store (the embedded default), snippets of 60–120 words of real manual text, 1,000 per document; "
             f"top {DEPTH} per query for the {len(eval_retrieval.load_questions(QUESTIONS))} reference development "
             "questions, p50 / p95 in ms after one warm-up pass. *1%*: a filter naming 1% of the documents. "
             "Sparse postings are BGE-M3-shaped: every distinct word-piece of the bundled model's tokenizer, weighted "
             "by its rarity (0.01 to 0.35). "
             "The load rate counts the snippets and their FTS5 indexing, and the sparse postings where they were "
             "loaded. Target: p95 ≤ 30 ms at 1,000,000, filters included.", "",
             "| snippets | load snippets/s | BM25, FTS5 | BM25, FTS5, 1% | sparse | sparse, 1% |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        load = f"{r['load_per_s']:,.0f}" + (" (with sparse)" if "sparse" in r else "")
        lines.append(f"| {r['n']:,} | {load} | {cell(r, 'bm25')} | {cell(r, 'bm25_1pct')} | "
                     f"{cell(r, 'sparse')} | {cell(r, 'sparse_1pct')} |")
    lines += ["", "**The shared word index** (`docenrich/textindex/`, what SQLite uses from `LEXICAL_INDEX_MIN` "
              "snippets on) over the same stores, opened as another process opens it. *Build*: indexing every "
              "snippet from the database, once. *First answer*: mapping the index and answering one query in a "
              "process that had not. *Top 10 shared with FTS5*: the mean share of FTS5's top 10 it returns (it "
              "scores words as FTS5's bm25() does, identifiers by their best part). *Ratio*: FTS5's p95 over the "
              "index's, same run.", "",
              "| snippets | build s | index MiB | first answer ms | BM25 | BM25, 1% | top 10 shared with FTS5 "
              "| p95 ratio (unfiltered / 1%) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "words" not in r:
            continue
        ratio = f"{r['bm25'][1] / r['words'][1]:.0f}× / {r['bm25_1pct'][1] / r['words_1pct'][1]:.0f}×"
        lines.append(f"| {r['n']:,} | {r['words_build_s']:.1f} | {r['words_mib']:.0f} | "
                     f"{1000 * r['words_first_s']:.0f} | {cell(r, 'words')} | {cell(r, 'words_1pct')} | "
                     f"{r['words_overlap']:.2f} | {ratio} |")
    lines += ["", "**The shared sparse postings index** (the same files, one per embedder, what SQLite uses for "
              "BGE-M3's lexical weights from `LEXICAL_INDEX_MIN` snippets on), over the same stores. It sums the "
              "same products as the SQL query, so its answers are the same.", "",
              "| snippets | build s | index MiB | sparse | sparse, 1% | p95 ratio to SQL (unfiltered / 1%) |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "sparse_index" not in r:
            continue
        ratio = (f"{r['sparse'][1] / r['sparse_index'][1]:.0f}× / {r['sparse_1pct'][1] / r['sparse_index_1pct'][1]:.0f}×"
                 if "sparse" in r else "SQL not run")
        lines.append(f"| {r['n']:,} | {r['sparse_build_s']:.1f} | {r['sparse_mib']:.0f} | {cell(r, 'sparse_index')} | "
                     f"{cell(r, 'sparse_index_1pct')} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--sparse-max", type=int, default=100_000,
                        help="largest size whose sparse postings SQL also searches (minutes per query beyond)")
    parser.add_argument("--sparse-load-max", type=int, default=1_000_000,
                        help="largest size that loads sparse postings (for the sparse index)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "LEXICAL.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    common.setup_environment()
    started = time.monotonic()
    words = corpus_words()
    questions = [q.question for q in eval_retrieval.load_questions(QUESTIONS)]
    rows = []
    common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=common.OUT_DIR) as work:
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(run_size(n, words, questions, n <= args.sparse_load_max, n <= args.sparse_max, Path(work)))
            args.out.write_text(report(rows, time.monotonic() - started))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
