"""Retrieval evaluation (make eval) → bench/EVAL.md: hit@1, hit@5, MRR@10 per search method.

Two frozen sets: `prose` (the Bash and Autoconf manuals, bench/eval/questions.jsonl) and
`reference` (the Octave, gnuplot, PARI/GP and libpari manuals, 2,571 pages of function reference,
bench/eval/reference/questions.jsonl). Each set is ingested into its own service and searched alone.

The pipeline's methods run through the real service: a worker and the web app (python app.py),
the manuals uploaded through /api/documents and searched through /api/search. The naive
baselines cut each page's text into 180-word windows and rank them by the same embedder
(dense), by SQLite FTS5 BM25 (lexical) and by reciprocal-rank fusion of both.

The questions (bench/eval/questions.jsonl) were written and frozen before any method was run;
this script only reads them.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

log = logging.getLogger("bench.eval")

EVAL_DIR = ROOT / "bench" / "eval"
DOCS_DIR = common.OUT_DIR / "eval-docs"
REPORT = ROOT / "bench" / "EVAL.md"
WINDOW_WORDS = 180
DEPTH = 10
RRF_K = 60

Ranking = list[str]  # the texts of the results, best first


# --------------------------------------------------------------------------- questions and scoring


@dataclass
class Question:
    id: str
    doc: str
    question: str
    kind: str
    page: int
    needles: list[str]


SETS = {  # set name → its frozen questions
    "prose": EVAL_DIR / "questions.jsonl",
    "reference": EVAL_DIR / "reference" / "questions.jsonl",
}
KINDS = ("identifier", "conceptual", "cross")


def load_questions(path: Path = EVAL_DIR / "questions.jsonl") -> list[Question]:
    """The frozen question set."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(Question(d["id"], d["doc"], d["question"], d["kind"], int(d["page"]), list(d["needles"])))
    return out


def norm(text: str) -> str:
    """Whitespace runs collapsed; a word hyphenated across a line break joined (both sides alike)."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"(\w)- (\w)", r"\1\2", text)


def first_hit(ranking: Ranking, needles: list[str]) -> int | None:
    """1-based rank of the first result that holds a needle, or None within the ranking."""
    wanted = [norm(n) for n in needles]
    for rank, text in enumerate(ranking, start=1):
        t = norm(text)
        if any(n in t for n in wanted):
            return rank
    return None


def metrics(ranks: list[int | None]) -> dict[str, float]:
    """hit@1, hit@5 and MRR@10 of a list of first-hit ranks."""
    n = max(1, len(ranks))
    return {
        "hit@1": sum(1 for r in ranks if r == 1) / n,
        "hit@5": sum(1 for r in ranks if r is not None and r <= 5) / n,
        "mrr@10": sum(1.0 / r for r in ranks if r is not None and r <= 10) / n,
    }


# --------------------------------------------------------------------------- naive baselines


def page_windows(path: Path, words: int = WINDOW_WORDS) -> list[str]:
    """Each page's text cut into consecutive windows of `words` words."""
    import pymupdf

    out = []
    with pymupdf.open(path) as doc:
        for page in doc:
            tokens = page.get_text().split()
            out.extend(" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words))
    return out


class Naive:
    """180-word windows ranked by dense cosine, FTS5 BM25, or their reciprocal-rank fusion."""

    def __init__(self, windows: list[str], embed: Callable[[list[str]], object]):
        import numpy as np

        self.windows = windows
        self.embed = embed
        self.matrix = np.asarray(embed(windows), dtype=np.float32)
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE w USING fts5(text)")
        self.db.executemany("INSERT INTO w(rowid, text) VALUES (?, ?)", enumerate(windows))

    def dense(self, query: str, k: int = 50) -> list[int]:
        import numpy as np

        scores = self.matrix @ np.asarray(self.embed([query])[0], dtype=np.float32)
        return [int(i) for i in np.argsort(-scores)[:k]]

    def lexical(self, query: str, k: int = 50) -> list[int]:
        words = re.findall(r"\w+", query)
        if not words:
            return []
        expr = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        rows = self.db.execute("SELECT rowid FROM w WHERE w MATCH ? ORDER BY bm25(w) LIMIT ?", (expr, k))
        return [r[0] for r in rows]

    def fused(self, query: str, k: int = 50) -> list[int]:
        scores: dict[int, float] = {}
        for ranked in (self.dense(query, k), self.lexical(query, k)):
            for rank, i in enumerate(ranked, start=1):
                scores[i] = scores.get(i, 0.0) + 1.0 / (RRF_K + rank)
        return sorted(scores, key=lambda i: -scores[i])

    def ranking(self, method: str, query: str) -> Ranking:
        return [self.windows[i] for i in getattr(self, method)(query)[:DEPTH]]


def bundled_embedder() -> Callable[[list[str]], object]:
    """The bundled model in this process, normalised like the worker's vectors."""
    from sentence_transformers import SentenceTransformer

    from docenrich.config import bundled_model_path

    model = SentenceTransformer(bundled_model_path(), device="cpu")
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)


# --------------------------------------------------------------------------- the pipeline


def fetch_docs(name: str = "prose") -> dict[str, Path]:
    """The evaluation manuals of one set by short name, fetched by bench/eval/fetch_docs.sh."""
    out = subprocess.run(["bash", str(EVAL_DIR / "fetch_docs.sh"), str(DOCS_DIR), name], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return {Path(line).stem: Path(line) for line in out.split() if line.endswith(".pdf")}


def ingest(web: common.WebProcess, docs: dict[str, Path], timeout: float = 3600) -> dict[str, dict]:
    """Upload every manual through the API and wait until each is ready."""
    ids = {name: web.upload(path)["id"] for name, path in docs.items()}
    started = time.monotonic()

    def ready() -> dict[str, dict] | None:
        states = {name: web.get(f"/api/documents/{i}")[1] for name, i in ids.items()}
        failed = [d for d in states.values() if d["state"] == "failed"]
        if failed:
            raise RuntimeError(f"ingestion failed: {failed[0]['error']}")
        return states if all(d["state"] == "ready" for d in states.values()) else None

    states = common.wait_for(ready, timeout, 2.0, "the manuals to be ingested")
    log.info("ingested %s in %.0fs", ", ".join(f"{n} ({d['snippet_count']} snippets)" for n, d in states.items()),
             time.monotonic() - started)
    return states


PIPELINE = {  # label → /api/search parameters
    "dense": {"mode": "dense", "rerank": 0},
    "lexical": {"mode": "lexical", "rerank": 0},
    "hybrid": {"mode": "hybrid", "rerank": 0},
    "hybrid + rerank": {"mode": "hybrid", "rerank": 1},
}


def pipeline_rankings(web: common.WebProcess, questions: list[Question]) -> dict[str, dict[str, Ranking]]:
    """Every pipeline method's top-10 texts per question, through GET /api/search."""
    out: dict[str, dict[str, Ranking]] = {}
    for label, params in PIPELINE.items():
        out[label] = {}
        for q in questions:
            _, body = web.get("/api/search", q=q.question, k=DEPTH, **params)
            if label == "hybrid + rerank" and not body["reranked"]:
                log.warning("reranker unavailable: %s", body["notes"])
            out[label][q.id] = [r["text"] for r in body["results"]]
    return out


def naive_rankings(docs: dict[str, Path], questions: list[Question]) -> dict[str, dict[str, Ranking]]:
    windows = [w for path in docs.values() for w in page_windows(path)]
    naive = Naive(windows, bundled_embedder())
    labels = {"naive dense": "dense", "naive FTS5 BM25": "lexical", "naive fusion (RRF)": "fused"}
    return {label: {q.id: naive.ranking(m, q.question) for q in questions} for label, m in labels.items()}


# --------------------------------------------------------------------------- report


def table_rows(rankings: dict[str, dict[str, Ranking]], questions: list[Question]) -> list[list[str]]:
    kinds = [k for k in KINDS if any(q.kind == k for q in questions)]
    rows = []
    for label, by_id in rankings.items():
        m = metrics([first_hit(by_id[q.id], q.needles) for q in questions])
        cells = [label, f"{m['hit@1']:.2f}", f"{m['hit@5']:.2f}", f"{m['mrr@10']:.2f}"]
        for kind in kinds:
            km = metrics([first_hit(by_id[q.id], q.needles) for q in questions if q.kind == kind])
            cells += [f"{km['hit@5']:.2f}", f"{km['mrr@10']:.2f}"]
        rows.append(cells)
    return rows


def set_section(name: str, rankings: dict[str, dict[str, Ranking]], questions: list[Question],
                states: dict[str, dict]) -> str:
    """One question set's results: the table by method and the first hit of every question."""
    kinds = [k for k in KINDS if any(q.kind == k for q in questions)]
    header = ["method", "hit@1", "hit@5", "MRR@10"] + [f"{k[:6]}. {m}" for k in kinds for m in ("hit@5", "MRR@10")]
    docs = ", ".join(f"`{n}` ({d['pages']} pages, {d['snippet_count']} snippets)" for n, d in states.items())
    counts = ", ".join(f"{sum(q.kind == k for q in questions)} {k}" for k in kinds)
    per_q = [[q.id, q.kind] + [str(first_hit(by_id[q.id], q.needles) or "–") for by_id in rankings.values()]
             for q in questions]
    return "\n".join([
        f"## The {name} set",
        "",
        f"{len(questions)} frozen questions ({SETS[name].relative_to(ROOT)}: {counts}) over {docs}.",
        "",
        common.table(header, table_rows(rankings, questions)),
        "",
        f"### First hit per question, {name} set (rank within the top 10, – if none)",
        "",
        common.table(["question", "kind"] + list(rankings), per_q),
        "",
    ])


def report(sections: list[str], seconds: float, notes: list[str]) -> str:
    return "\n".join([
        "# Retrieval evaluation",
        "",
        f"Generated by `make eval` (bench/eval_retrieval.py) in {seconds:.0f} s on "
        f"{common.machine_line(common.machine_info())}.",
        "",
        "- **Hit**: a result snippet holds one of the question's needles (whitespace collapsed). "
        "All documents of a set are searched at once; k = 10.",
        "- **Pipeline**: the PDFs uploaded through /api/documents and processed by a real worker "
        "(bundled all-MiniLM-L6-v2 embedder), searched through /api/search. *hybrid + rerank* reranks the "
        "fused top 30 with the tests' seeded cross-encoder (a stand-in with random head weights, so it "
        "measures the plumbing, not a real reranker's quality).",
        f"- **Naive baselines**: each page's text in {WINDOW_WORDS}-word windows; dense with the same "
        "model, FTS5 BM25 (unicode61, query words OR-ed), and reciprocal-rank fusion (k = 60) of both.",
        *notes,
        "",
        *sections,
    ])


def variant_rankings(env: common.BenchEnv, label: str, settings: dict[str, str], questions: list[Question]
                     ) -> dict[str, Ranking]:
    """Hybrid rankings from a second web process with search-time settings of its own (same store)."""
    web = common.WebProcess(env.log_dir / f"web-{label}.log", env=settings).start()
    try:
        return {q.id: [r["text"] for r in web.get("/api/search", q=q.question, k=DEPTH, mode="hybrid",
                                                  rerank=0)[1]["results"]] for q in questions}
    finally:
        web.stop()


def run_set(name: str, env_overrides: dict[str, str], variants: list[tuple[str, dict[str, str]]] = ()
            ) -> tuple[dict, list[Question], dict]:
    """Ingest one set's manuals into a fresh service and rank every question with every method."""
    docs = fetch_docs(name)
    questions = load_questions(SETS[name])
    with common.BenchEnv() as env:
        env.worker("main", env=env_overrides or None)
        web = env.web(**env_overrides)
        states = ingest(web, docs)
        rankings = pipeline_rankings(web, questions)
        for label, settings in variants:
            rankings[f"hybrid, {label}"] = variant_rankings(env, label.replace(" ", "-"),
                                                            {**env_overrides, **settings}, questions)
    rankings.update(naive_rankings(docs, questions))
    return rankings, questions, states


def _each_set_alone(names: list[str], args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run each set in a process of its own (each has its own Redis and store), then join the reports."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = [a for i, a in enumerate(argv) if not (a.startswith(("--sets", "--output")) or
                                                   (i and argv[i - 1] in ("--sets", "--output")))]
    parts = []
    for name in names:
        out = common.OUT_DIR / f"EVAL-{name}.md"
        subprocess.run([sys.executable, __file__, "--sets", name, "--output", str(out), *rest], check=True)
        parts.append(out.read_text())
    head, _, first = parts[0].partition("\n## The ")
    body = ["## The " + first] + ["## The " + p.partition("\n## The ")[2] for p in parts[1:]]
    args.output.write_text(head + "\n" + "\n".join(body))
    log.info("wrote %s", args.output)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--sets", default="prose,reference", help="comma-separated: prose, reference")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the worker and web process (for ablations)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=VALUE[,NAME=VALUE]",
                        help="also rank with hybrid search under these search-time settings")
    parser.add_argument("--json", type=Path, default=None, help="also write every method's rankings here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.monotonic()
    overrides = dict(item.split("=", 1) for item in args.env)
    variants = [(label, dict(kv.split("=", 1) for kv in spec.split(",")))
                for label, _, spec in (v.partition(":") for v in args.variant)]
    sections, dump = [], {}
    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    if len(names) > 1:
        return _each_set_alone(names, args, argv)
    for name in names:
        rankings, questions, states = run_set(name, overrides, variants)
        sections.append(set_section(name, rankings, questions, states))
        dump[name] = {label: {qid: first_hit(r, next(q.needles for q in questions if q.id == qid))
                              for qid, r in by_id.items()} for label, by_id in rankings.items()}
    notes = [f"- **Settings**: {', '.join(f'`{k}={v}`' for k, v in overrides.items())}."] if overrides else []
    args.output.write_text(report(sections, time.monotonic() - started, notes))
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))
    log.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
