"""Which fusion: reciprocal-rank vs a weighted sum, measured on a development set → bench/DEVSET.md.

The development set is made from documents that are NOT in the evaluation set: manuals that
Debian installs (libtasn1-doc, shared-mime-info) and a German lecture script of the shared corpus.
Questions are generated from their snippets: identifier questions name a rare identifier of a
snippet; conceptual ones are a sentence of a snippet with half of its words dropped. The needle
is the passage around the identifier or the sentence itself. Everything runs in this process
(extraction, the bundled embedder, the SQLite store's FTS5 index), since only the fusion differs.
"""
from __future__ import annotations

import random
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.eval_retrieval import bundled_embedder, first_hit, metrics  # noqa: E402

DEV_DOCS = [
    Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
    Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),
    common.CORPUS / "009-pdflatex-geotopo" / "GeoTopo-komprimiert.pdf",
]
REPORT = ROOT / "bench" / "DEVSET.md"
IDENT = re.compile(r"\b(?:[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+|[a-z]\w*\(\)|--[a-z][\w-]+)")
PER_KIND = 60


def ingest(store, embed) -> list:
    """Extract the dev documents as the pipeline does and store snippets with their vectors."""
    from docenrich.models.tokens import token_counter
    from docenrich.pdf import extract_snippets
    from docenrich.records import embedding_text

    counter = token_counter(__import__("docenrich.config", fromlist=["x"]).bundled_model_path())
    for path in DEV_DOCS:
        doc, _ = store.add_document(path.read_bytes(), path.name)
        sn = [s for s in extract_snippets(path, doc.id, images=False, count_tokens=counter,
                                          max_tokens=counter.max_tokens) if s.text]
        for s, v in zip(sn, embed([embedding_text(s) for s in sn])):
            s.embedding, s.embedding_model = v, "dev"
        store.begin_batches(doc.id, 1)
        store.save_batch(doc.id, 0, sn)
    return [s for d in store.list_documents() for s in store.snippets(d.id) if s.kind == "text"]


def questions(snippets: list, rng: random.Random) -> list[dict]:
    """Identifier and conceptual questions with their needles, PER_KIND of each at most."""
    freq = Counter(m for s in snippets for m in set(IDENT.findall(s.text)))
    ident, concept = [], []
    for s in snippets:
        rare = [m for m in set(IDENT.findall(s.text)) if freq[m] <= 2]
        if rare:
            name = sorted(rare)[0]
            at = s.text.index(name)
            needle = s.text[max(0, at - 40): at + len(name) + 40].split(" ", 1)[-1].rsplit(" ", 1)[0]
            ident.append({"kind": "identifier", "question": f"what is {name} for", "needles": [needle]})
        sentences = [x for x in re.split(r"(?<=[.!?])\s+", s.text) if 12 <= len(x.split()) <= 40]
        if sentences:
            words = sentences[0].split()
            kept = [w for w in words if rng.random() < 0.5 and not IDENT.search(w)]
            concept.append({"kind": "conceptual", "question": " ".join(kept), "needles": [sentences[0]]})
    rng.shuffle(ident)
    rng.shuffle(concept)
    return ident[:PER_KIND] + concept[:PER_KIND]


def run() -> str:
    from docenrich import fusion
    from docenrich.storage import SQLiteStore
    from docenrich.vectorindex import VectorIndex

    embed = bundled_embedder()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(tmp)
        snippets = ingest(store, embed)
        qs = questions(snippets, random.Random(7))
        index = VectorIndex(store, "dev")
        index.refresh()
        lists = []
        for q, v in zip(qs, embed([q["question"] for q in qs])):
            lists.append({"dense": index.search(v, 50), "lexical": store.lexical_search(q["question"], 50)})
        methods = {"dense only": lambda ls: ls["dense"], "lexical only": lambda ls: ls["lexical"]}
        for k in (10, 60):
            methods[f"RRF k={k}"] = lambda ls, k=k: fusion.rrf(ls, k=k)
        for w in (0.3, 0.5, 0.7):
            methods[f"weighted, dense {w}"] = lambda ls, w=w: fusion.weighted(ls, {"dense": w, "lexical": 1 - w})
        rows = []
        for label, fuse in methods.items():
            for kind in ("identifier", "conceptual", None):
                picked = [(q, ls) for q, ls in zip(qs, lists) if kind is None or q["kind"] == kind]
                ranks = [first_hit([t.text for t in store.get_snippets([i for i, _ in fuse(ls)[:10]])], q["needles"])
                         for q, ls in picked]
                m = metrics(ranks)
                rows.append([label, kind or "all", f"{m['hit@1']:.2f}", f"{m['hit@5']:.2f}", f"{m['mrr@10']:.2f}"])
        store.close()
    names = ", ".join(p.name for p in DEV_DOCS)
    return "\n".join([
        "# Fusion development set", "",
        f"Generated by `python bench/devset_fusion.py` on {common.machine_line(common.machine_info())}.", "",
        f"{len(qs)} generated questions ({sum(q['kind'] == 'identifier' for q in qs)} identifier, "
        f"{sum(q['kind'] == 'conceptual' for q in qs)} conceptual) over {names}; "
        f"{len(snippets)} text snippets; bundled all-MiniLM-L6-v2; each list 50 deep. Generated questions "
        "copy words from their passage, so they favour lexical matching more than people's questions do.", "",
        common.table(["fusion", "questions", "hit@1", "hit@5", "MRR@10"], rows), "",
    ])


if __name__ == "__main__":
    common.setup_environment()
    REPORT.write_text(run())
    print(REPORT.read_text())
