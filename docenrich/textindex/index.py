"""Search over the postings indexes every process of a host maps (files.py), filters inside the search:
BM25 over the words (WordIndex), and the dot product of learned-sparse weights (SparseIndex).

A store below `min_rows` snippets, or whose index is being built, answers from SQL instead (the
caller's fallback): the indexes serve the scale where an OR query scores every matching row.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docenrich.filters import SearchFilter
from docenrich.storage.base import StorageError
from docenrich.storage.terms import fold, query_terms, stem
from docenrich.textindex.files import (
    WordFiles,
    WordManifest,
    needs_optimize,
    optimize,
    sparse_dir,
    sync,
    words_dir,
)
from docenrich.textindex.postings import (
    PhraseHits,
    Scores,
    Segment,
    bm25_scores,
    has_phrase,
    index_words,
    term_key,
    weighted_scores,
)
from docenrich.textindex.sources import SparseSource, WordSource
from docenrich.vectorindex.files import COLUMNS, map_column
from docenrich.vectorindex.mapped import allowed_rows
from docenrich.vectorindex.memory import allowed_documents
from docenrich.vectorindex.residency import PageBudget

log = logging.getLogger(__name__)

# A search that finds more snippets than this not yet indexed hands the catch-up to a background
# thread and is answered by FTS5 meanwhile (a million rows take minutes to index).
FOREGROUND_ROWS = 50_000


@dataclass(frozen=True)
class WordView:
    """One mapped generation (the fields allowed_rows reads, and the segments)."""

    generation: int
    base: int
    n: int
    alive_rows: int
    ids: np.ndarray
    doc: np.ndarray
    page: np.ndarray
    kind: np.ndarray
    alive: np.ndarray | None
    doc_codes: dict[str, int]
    kind_codes: dict[str, int]
    segments: tuple[Segment, ...]


class PostingsIndex:
    """A postings index of one data directory, mapped: refresh() keeps it in step with its source."""

    def __init__(self, store, source, directory: Path, min_rows: int = 50_000, page_budget: int = 0):
        """An index of `source` in `directory`; it answers once the store has min_rows snippets.
        page_budget: bytes the process may grow by through mapped files before it gives their pages back."""
        self.store, self.source, self.min_rows = store, source, min_rows
        self.files = WordFiles(directory)
        self.pages = PageBudget(page_budget)
        self.background = True  # False: catch-ups and optimisations run in the caller's thread (tests, tools)
        self._view: WordView | None = None
        self._lock = threading.Lock()
        self._busy = threading.Event()  # a background sync or optimisation is running

    def refresh(self) -> bool:
        """Catch up with the source; whether the index can answer now."""
        state = self.source.state()
        if self.source.snippets(state) < self.min_rows:
            return False
        with self._lock:
            m = self.files.manifest()
            if m is None or tuple(m.state) != state:
                if self._behind(m, state) > FOREGROUND_ROWS:
                    self._background(lambda: sync(self.source, self.files))
                    return False
                m = sync(self.source, self.files, blocking=False)
                if m is None:
                    # Another writer holds the files (an optimisation takes a while): SQL answers meanwhile,
                    # rather than a generation that may still show deleted snippets.
                    return False
            if self._view is None or self._view.generation != m.generation or self._view.base != m.base:
                view = self._map(m)
                if view is None:
                    return False
                self._view = view
            if needs_optimize(m):
                self._background(lambda: optimize(self.files))
        return True

    def catch_up(self) -> None:
        """The writers' side: index what was just committed, when the index is in use and not far behind
        (a first build is left to a search's background thread); failures leave it to the readers."""
        try:
            state = self.source.state()
            if self.source.snippets(state) < self.min_rows:
                return
            m = self.files.manifest()
            if m is not None and tuple(m.state) != state and self._behind(m, state) <= FOREGROUND_ROWS:
                sync(self.source, self.files, blocking=False)  # busy: the next save or search catches up
        except (OSError, StorageError) as exc:
            log.warning("postings index %s not updated: %s", self.files.dir.name, exc)

    def _behind(self, m: WordManifest | None, state: tuple) -> int:
        """About how many rows a sync would index (a change counter's distance)."""
        return state[0] - (m.state[0] if m else 0)

    def _background(self, work) -> None:
        if not self.background:
            work()
            return
        if self._busy.is_set():
            return
        self._busy.set()

        def guarded() -> None:
            try:
                work()
            except Exception:  # the published files stay as they were
                log.exception("word index background job failed")
            finally:
                self._busy.clear()

        threading.Thread(target=guarded, name="word-index", daemon=True).start()

    def _map(self, m: WordManifest) -> WordView | None:
        """Map a generation; files collected under us mean a newer one is published: map that (None: give up)."""
        for _ in range(3):
            try:
                return self._map_once(m)
            except FileNotFoundError:
                m = self.files.manifest()
                if m is None:
                    return None
        return None

    def _map_once(self, m: WordManifest) -> WordView:
        col = {name: map_column(self.files.column(m.base, name), dtype, m.rows) for name, dtype in COLUMNS}
        alive = None
        if m.deleted:
            alive = np.ones(m.rows, dtype=bool)
            alive[self.files.deleted_positions(m)] = False
        segments = tuple(self.files.map_segment(m.base, e) for e in m.segments)
        return WordView(m.generation, m.base, m.rows, m.rows - m.deleted, col["ids"], col["doc"], col["page"],
                        col["kind"], alive, self.files.doc_codes(m), {k: i for i, k in enumerate(m.kinds)}, segments)

    def _allowed(self, view: WordView, filter: SearchFilter | None) -> np.ndarray | None:
        """The rows the filter and the mask allow, as a mask over all rows (None: every row)."""
        rows = allowed_rows(view, filter, allowed_documents(self.store, filter))
        if rows is None:
            return None
        allowed = np.zeros(view.n, dtype=bool)
        allowed[rows] = True
        return allowed


class SparseIndex(PostingsIndex):
    """Top-k by the dot product of learned-sparse weights over one embedder's postings index."""

    def __init__(self, store, embedder: str, data_dir: str | Path, min_rows: int = 50_000, page_budget: int = 0):
        """The index of `embedder`'s sparse postings under DATA_DIR/lexical/."""
        super().__init__(store, SparseSource(store, embedder), sparse_dir(data_dir, embedder), min_rows, page_budget)

    def search(self, weights: list[tuple[int, float]], k: int,
               filter: SearchFilter | None = None) -> list[tuple[int, float]]:
        """Top-k (snippet_id, score) among the rows the filter allows, best first."""
        view = self._view
        if view is None or k <= 0 or not view.n or not weights:
            return []
        allowed = self._allowed(view, filter)
        if allowed is not None and not allowed.any():
            return []
        sums = weighted_scores(view.segments, weights, view.n, k, allowed)
        try:
            best, best_scores = sums.top(k, allowed)
        finally:
            sums.release()
        self.pages.check(self.files.dir.parent)
        return [(int(view.ids[r]), float(s)) for r, s in zip(best.tolist(), best_scores.tolist(), strict=True)]


class WordIndex(PostingsIndex):
    """Top-k BM25 over the word index of one data directory."""

    def __init__(self, store, data_dir: str | Path, min_rows: int = 50_000, page_budget: int = 0):
        """The index under DATA_DIR/lexical/words/."""
        super().__init__(store, WordSource(store), words_dir(data_dir), min_rows, page_budget)

    def search(self, query: str, k: int, filter: SearchFilter | None = None) -> list[tuple[int, float]]:
        """Top-k (snippet_id, BM25 score) among the rows the filter allows, best first."""
        view = self._view
        if view is None or k <= 0 or not view.n:
            return []
        # Terms that stem alike ("plot", "plots") are one phrase counted twice, as FTS5 scores them.
        counts = Counter(tuple(stem(fold(part)) for part in parts) for parts in query_terms(query))
        words = [list(w) for w in counts]
        phrases = [[term_key(w) for w in parts] for parts in words]
        allowed = self._allowed(view, filter)
        if allowed is not None and not allowed.any():
            return []
        sums, multi = bm25_scores(view.segments, phrases, view.n, view.alive_rows, view.alive, list(counts.values()))
        try:
            best, best_scores = self._verified_top(view, sums, multi, words, k, allowed)
        finally:
            sums.release()
        self.pages.check(self.files.dir.parent)
        return [(int(view.ids[r]), float(s)) for r, s in zip(best.tolist(), best_scores.tolist(), strict=True)]

    def _verified_top(self, view: WordView, sums: Scores, multi: list[PhraseHits], words: list[list[str]],
                      k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The top k once the best candidates' identifier phrases are checked against their text: a
        row whose parts are not side by side loses that phrase's score (checking can only lower a
        score, so the pool widens until no unchecked row could still make the top k)."""
        pool = 2 * k
        while True:
            best, best_scores = sums.top(pool, allowed)
            if not multi or not len(best):
                return best[:k], best_scores[:k]
            checked = best_scores - self._phrase_losses(view, best, multi, words)
            # A row left with nothing once its loose parts are discounted does not match at all.
            order = np.lexsort((best, -checked))
            order = order[checked[order] > 1e-9][:k]
            if len(best) < pool or (len(order) == k and checked[order[-1]] >= best_scores[-1]):
                return best[order], checked[order]
            pool *= 4

    def _phrase_losses(self, view: WordView, rows: np.ndarray, multi: list[PhraseHits],
                       words: list[list[str]]) -> np.ndarray:
        """What each row loses for the multi-part phrases whose parts it holds apart."""
        loss = np.zeros(len(rows))
        hits = [(p, np.searchsorted(p.rows, rows)) for p in multi]
        hits = [(p, np.minimum(pos, len(p.rows) - 1)) for p, pos in hits]
        need = {int(r) for p, pos in hits for r, q in zip(rows, pos, strict=True) if p.rows[q] == r}
        if not need:
            return loss
        texts = self.store.text_rows(0, 2**62, len(need), np.asarray(sorted(int(view.ids[r]) for r in need)))
        texts_by_id = {int(i): tc for i, tc in zip(texts["ids"].tolist(), texts["texts"], strict=True)}
        for p, pos in hits:
            parts = words[p.phrase]
            for j, (r, q) in enumerate(zip(rows.tolist(), pos.tolist(), strict=True)):
                if p.rows[q] == r and not _holds(texts_by_id.get(int(view.ids[r]), ("", "")), parts):
                    loss[j] += p.weights[q]
        return loss


def _holds(text_context: tuple[str, str], parts: list[str]) -> bool:
    """Whether the text or the context holds the stemmed parts side by side."""
    return any(has_phrase(index_words(t), parts) for t in text_context if t)
