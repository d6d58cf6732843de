"""The shared BM25 word index (textindex/): scores as FTS5's bm25(), rows in step with the snippets
table (new, changed in place, deleted), filters inside the search, merges, compaction, crashes."""
from __future__ import annotations

import time

import numpy as np
import pytest

from docenrich.filters import SearchFilter
from docenrich.records import Snippet
from docenrich.storage import SQLiteStore
from docenrich.storage.sqlite.store import fts_query
from docenrich.textindex import files as word_files
from docenrich.textindex import index as word_index
from docenrich.textindex.postings import (
    Scores,
    Segment,
    Triples,
    bm25_scores,
    bm25_triples,
    compacted,
    has_phrase,
    sparse_triples,
    term_key,
    weighted_scores,
)
from tests.storeutil import pdf_bytes

VOCAB = ("archive extract variable environment matrix vector solve plot axis label legend file "
         "option default value string pattern regular expression").split()


def texts(rng: np.random.Generator, n: int) -> list[str]:
    """n texts of 3 to 30 words from a small vocabulary: many shared terms, distinct lengths."""
    return [" ".join(rng.choice(VOCAB, rng.integers(3, 31))) for _ in range(n)]


def add_doc(st, tag: str, body: list[str], heading: str | None = None, kind: str = "text") -> str:
    doc, _ = st.add_document(pdf_bytes(tag), f"{tag}.pdf")
    st.begin_batches(doc.id, 1)
    st.save_batch(doc.id, 0, [Snippet(text=t, page=i + 1, bbox=(0.0, 0.0, 1.0, 1.0), document_id=doc.id,
                                      ordinal=i, kind=kind, meta={"heading": heading} if heading else {})
                              for i, t in enumerate(body)])
    return doc.id


def fts5(st, query: str, k: int, **kw) -> list[tuple[int, float]]:
    """What FTS5 answers for the same store (the index's reference)."""
    return super(SQLiteStore, st).lexical_search(query, k, **kw)


def wait_idle(index, timeout: float = 30.0) -> None:
    """Until the index's background job (catch-up or optimisation) is done."""
    deadline = time.monotonic() + timeout
    while index._busy.is_set():
        assert time.monotonic() < deadline, "the background job did not end"
        time.sleep(0.02)


@pytest.fixture
def st(tmp_path):
    """A store whose postings indexes answer at any size, their background jobs run inline (deterministic)."""
    store = SQLiteStore(tmp_path / "data", lexical_min_rows=0)
    store.words.background = False
    yield store
    store.close()


def test_a_segment_round_trips_and_keeps_each_terms_rows_ascending():
    t = Triples(np.array([5, 3, 5, 3, 9], np.uint64), np.array([4, 1, 0, 2, 3], np.uint32),
                np.array([1, 2, 3, 4, 5], np.float32))
    seg = Segment.build(t)
    assert seg.vocab.tolist() == [3, 5, 9] and seg.off.tolist() == [0, 2, 4, 5]
    rows, imp = seg.postings(5)
    assert rows.tolist() == [0, 4] and imp.tolist() == [3, 1]
    assert seg.postings(4)[0].tolist() == []
    back = Segment.build(seg.triples())
    assert all(np.array_equal(getattr(back, f), getattr(seg, f)) for f in ("vocab", "off", "rows", "imp"))
    kept = compacted(seg.triples(), np.array([True, False, True, True, False]))
    assert sorted(zip(kept.keys.tolist(), kept.rows.tolist(), strict=True)) == [(3, 1), (5, 0), (9, 2)]


def test_a_phrase_counts_only_where_all_its_parts_are():
    t, _ = bm25_triples([("r makevars user", ""), ("makevars only", ""), ("user r", "")], 0)
    seg = Segment.build(t)
    phrase = [term_key(w) for w in ("r", "makevar", "user")]
    sums, multi = bm25_scores([seg], [phrase], 3, 3)
    assert sums.top(5, None)[0].tolist() == [0] and multi[0].rows.tolist() == [0] and multi[0].phrase == 0
    sums.release()
    sums, multi = bm25_scores([seg], [[term_key("makevar")]], 3, 3)
    assert sorted(sums.top(5, None)[0].tolist()) == [0, 1] and multi == []
    sums.release()
    assert has_phrase([1, 2, 3, 4], [2, 3]) and not has_phrase([2, 1, 3], [2, 3]) and not has_phrase([2], [2, 3])


def test_top_takes_the_best_allowed_rows_best_first_and_release_zeroes():
    sums = Scores(6)
    sums.add(np.arange(6), np.array([1.0, 5.0, 3.0, 5.0, 4.0, 2.0], np.float32))
    rows, got = sums.top(3, None)
    assert rows.tolist() == [1, 3, 4] and got.tolist() == [5.0, 5.0, 4.0]
    assert sums.top(2, np.array([True, False, True, False, False, True]))[0].tolist() == [2, 5]
    sums.release()
    assert not Scores(6).acc.any()


def test_top_of_many_rows_is_the_exact_top_k():
    rng = np.random.default_rng(2)
    scores = rng.random(200_000).astype(np.float32)
    scores[rng.random(200_000) < 0.3] = 0  # rows no term matched
    sums = Scores(len(scores))
    sums.add(np.arange(len(scores)), scores)
    for k in (1, 10, 50):
        rows, got = sums.top(k, None)
        assert rows.tolist() == np.argsort(-scores, kind="stable")[:k].tolist()
    sums.release()


def test_scores_are_fts5_bm25_for_words(st):
    rng = np.random.default_rng(3)
    for d in range(4):
        add_doc(st, f"d{d}", texts(rng, 40), heading="Axis options" if d % 2 else None)
    assert st.words.refresh()
    for query in ("archive", "matrix solve", "plot axis label", "regular expression pattern", "legend"):
        ours, ref = st.lexical_search(query, 20), fts5(st, query, 20)
        assert [s for _, s in ours] == pytest.approx([s for _, s in ref], rel=1e-4), query
        # Equal scores may come in either order; the sets of rows per score agree.
        assert {i for i, _ in ours} == {i for i, _ in ref} or len(ours) == 20, query


@pytest.mark.parametrize("query", ["R_MAKEVARS_USER", "foo.bar()", "tar --no-same-owner", "Größenänderung"])
def test_identifiers_match_as_fts5_matches_them(st, query):
    add_doc(st, "a", ["Set R_MAKEVARS_USER to a file.", "makevars and the user, loosely.", "Call foo.bar() once.",
                      "The bar of foo.", "Extract with tar --no-same-owner.", "Die Größenänderung der Fenster."])
    assert [i for i, _ in st.lexical_search(query, 5)] == [i for i, _ in fts5(st, query, 5)], fts_query(query)


def test_new_changed_and_deleted_snippets_are_followed(st):
    a = add_doc(st, "a", ["the XDG_CONFIG_HOME variable", "nothing here"])
    assert [st.get_snippet(i).document_id for i, _ in st.lexical_search("XDG_CONFIG_HOME", 5)] == [a]
    b = add_doc(st, "b", ["another XDG_CONFIG_HOME mention"])
    assert len(st.lexical_search("XDG_CONFIG_HOME", 5)) == 2
    # A batch saved again with new text: same snippet id, the old text no longer matches.
    st.save_batch(a, 0, [Snippet(text="now about PROXY_TIMEOUT", page=1, bbox=(0.0, 0.0, 1.0, 1.0),
                                 document_id=a, ordinal=0)])
    assert [st.get_snippet(i).document_id for i, _ in st.lexical_search("XDG_CONFIG_HOME", 5)] == [b]
    assert [st.get_snippet(i).text for i, _ in st.lexical_search("PROXY_TIMEOUT", 5)] == ["now about PROXY_TIMEOUT"]
    assert st.delete_document(b)
    assert st.lexical_search("XDG_CONFIG_HOME", 5) == []
    assert st.lexical_search("XDG_CONFIG_HOME", 5, filter=SearchFilter(document_ids=(b,))) == []
    assert st.words.refresh() and st.words._view.alive_rows == 2


def test_a_filter_keeping_one_percent_gets_that_sets_true_top_k(st):
    rng = np.random.default_rng(7)
    ids = [add_doc(st, f"d{d}", texts(rng, 20), kind="toc" if d % 3 == 0 else "text") for d in range(100)]
    keep = SearchFilter(document_ids=(ids[41],))
    for query in ("archive value", "matrix", "environment variable default"):
        ours, ref = st.lexical_search(query, 10, filter=keep), fts5(st, query, 10, filter=keep)
        assert ours and [s for _, s in ours] == pytest.approx([s for _, s in ref], rel=1e-4)
        assert {st.get_snippet(i).document_id for i, _ in ours} == {ids[41]}
    pages = SearchFilter(page_from=3, page_to=4, exclude_kinds=("toc",))
    ours = st.lexical_search("matrix", 50, filter=pages)
    assert [s for _, s in ours] == pytest.approx([s for _, s in fts5(st, "matrix", 50, filter=pages)], rel=1e-4)
    assert all(3 <= st.get_snippet(i).page <= 4 and st.get_snippet(i).kind == "text" for i, _ in ours)


def test_segments_merge_and_compact_without_changing_answers(st, monkeypatch):
    rng = np.random.default_rng(11)
    ids = []
    for d in range(word_files.MAX_SEGMENTS + 3):  # a sync per document: one segment each, then merges
        ids.append(add_doc(st, f"d{d}", texts(rng, 15)))
        assert st.words.refresh()
    m = st.words.files.manifest()
    assert len(m.segments) <= word_files.MAX_SEGMENTS and m.rows == 15 * len(ids)
    monkeypatch.setattr(word_index, "needs_optimize", lambda m: False)  # hold the compaction back
    for doc_id in ids[:4]:
        st.delete_document(doc_id)
    assert st.words.refresh()
    masked = st.words.files.manifest()
    assert masked.deleted == 60 and word_files.needs_optimize(masked)
    before = st.lexical_search("vector plot", 30)
    assert before and all(st.get_snippet(i) is not None for i, _ in before)
    compacted_m = word_files.optimize(st.words.files)
    assert compacted_m.base > masked.base and compacted_m.deleted == 0 and len(compacted_m.segments) == 1
    assert compacted_m.rows == 15 * (len(ids) - 4)
    assert st.words.refresh() and st.words._view.base == compacted_m.base
    assert st.lexical_search("vector plot", 30) == before


def test_two_processes_share_one_generation(tmp_path):
    writer = SQLiteStore(tmp_path / "data", lexical_min_rows=0)
    reader = SQLiteStore(tmp_path / "data", lexical_min_rows=0)
    add_doc(writer, "a", ["shared words index"])
    assert writer.words.refresh()
    gen = writer.words.files.manifest().generation
    assert reader.words.refresh() and reader.words._view.generation == gen  # mapped, not rebuilt
    add_doc(writer, "b", ["more shared words"])
    assert len(reader.lexical_search("shared", 5)) == 2
    writer.close()
    reader.close()


def test_a_crash_mid_append_leaves_a_readable_index(st):
    add_doc(st, "a", ["first archive text", "second archive text"])
    assert st.words.refresh()
    m = st.words.files.manifest()
    # A writer died after writing rows and a segment but before publishing its manifest.
    with open(st.words.files.column(m.base, "ids"), "ab") as fh:
        fh.write(b"\x07" * 40)
    st.words.files.column(m.base, f"s{m.generation + 1}.rows").write_bytes(b"\x00" * 12)
    other = SQLiteStore(st.data_dir, lexical_min_rows=0)
    assert other.words.refresh() and len(other.lexical_search("archive", 5)) == 2
    add_doc(st, "b", ["third archive text"])
    assert [len(s.lexical_search("archive", 5)) for s in (st, other)] == [3, 3]
    assert st.words.files.manifest().rows == 3
    other.close()


def test_far_behind_the_index_catches_up_aside_and_fts5_answers_meanwhile(st, monkeypatch):
    monkeypatch.setattr(word_index, "FOREGROUND_ROWS", 5)
    st.words.background = True
    add_doc(st, "a", texts(np.random.default_rng(1), 12))
    assert not st.words.refresh()  # handed to a background thread
    assert st.lexical_search("archive", 3) == fts5(st, "archive", 3)
    wait_idle(st.words)
    assert st.words.files.manifest().rows == 12 and st.words.refresh()


def test_below_the_threshold_fts5_answers(tmp_path):
    store = SQLiteStore(tmp_path / "data", lexical_min_rows=10)
    add_doc(store, "a", ["few snippets here"])
    assert not store.words.refresh() and store.words.files.manifest() is None
    assert store.lexical_search("snippets", 3) == fts5(store, "snippets", 3)
    store.close()


def add_sparse_doc(st, tag: str, rng: np.random.Generator, n: int) -> str:
    """A document of n snippets with random BGE-M3-like weights over 60 tokens."""
    doc, _ = st.add_document(pdf_bytes(tag), f"{tag}.pdf")
    st.begin_batches(doc.id, 1)
    snippets = []
    for i in range(n):
        tokens = rng.choice(60, rng.integers(3, 12), replace=False)
        snippets.append(Snippet(text=f"{tag} {i}", page=i % 5 + 1, bbox=(0.0, 0.0, 1.0, 1.0), document_id=doc.id,
                                ordinal=i, embedding=np.full(4, 0.5, np.float32), embedding_model="m3",
                                sparse={int(t): float(w) for t, w in zip(tokens, rng.uniform(0.01, 0.4, len(tokens)),
                                                                         strict=True)}))
    st.save_batch(doc.id, 0, snippets)
    return doc.id


def sql_sparse(st, weights: dict, k: int, **kw) -> list[tuple[int, float]]:
    return super(SQLiteStore, st).sparse_search("m3", weights, k, **kw)


def test_sparse_scores_are_the_sql_dot_product_with_filters_inside(st):
    rng = np.random.default_rng(5)
    ids = [add_sparse_doc(st, f"s{d}", rng, 10) for d in range(100)]
    query = {int(t): float(w) for t, w in zip(rng.choice(60, 8, replace=False), rng.uniform(0.1, 1, 8), strict=True)}
    for f in (None, SearchFilter(document_ids=(ids[17],)), SearchFilter(page_from=2, page_to=2)):
        ours, ref = st.sparse_search("m3", query, 10, filter=f), sql_sparse(st, query, 10, filter=f)
        assert ours and [s for _, s in ours] == pytest.approx([s for _, s in ref], rel=1e-5)
    assert st._sparse["m3"].files.manifest().rows == 1000
    assert st.delete_document(ids[17])
    assert st.sparse_search("m3", query, 10, filter=SearchFilter(document_ids=(ids[17],))) == []
    again = st.sparse_search("m3", query, 10)
    assert [s for _, s in again] == pytest.approx([s for _, s in sql_sparse(st, query, 10)], rel=1e-5)
    assert st.sparse_search("other", query, 10) == []


def test_writers_keep_an_index_in_use_current(st):
    add_doc(st, "a", ["first archive"])
    assert st.words.refresh()
    gen = st.words.files.manifest().generation
    add_doc(st, "b", ["second archive"])  # a docs worker's save: it appends before any search
    m = st.words.files.manifest()
    assert m.generation > gen and m.rows == 2


def test_sparse_pruning_keeps_the_exact_top_k():
    rng = np.random.default_rng(9)
    n = 20_000
    # Three tokens in nearly every row with small weights (as "the", "of"), thirty rarer ones.
    rows, tokens, weights = [], [], []
    for t in range(33):
        share = 0.95 if t < 3 else rng.uniform(0.001, 0.05)
        r = np.flatnonzero(rng.random(n) < share)
        rows.append(r)
        tokens.append(np.full(len(r), t))
        weights.append(rng.uniform(0.01, 0.05 if t < 3 else 0.4, len(r)))
    seg = Segment.build(sparse_triples(np.concatenate(tokens), np.concatenate(weights), np.concatenate(rows)))
    query = [(int(t), float(w)) for t, w in zip(range(33), rng.uniform(0.2, 1.0, 33), strict=True)]
    dense = np.zeros(n)
    for t, w in query:
        r, imp = seg.postings(t)
        dense[r] += imp * np.float32(w)
    allowed = rng.random(n) < 0.3
    for mask in (None, allowed):
        for k in (1, 10, 50):
            sums = weighted_scores([seg], query, n, k, mask)
            got_rows, got = sums.top(k, mask)
            sums.release()
            ref = np.where(mask, dense, 0) if mask is not None else dense
            want = np.argsort(-ref, kind="stable")[:k]
            assert got_rows.tolist() == want.tolist()
            assert got == pytest.approx(ref[want], rel=1e-5)
