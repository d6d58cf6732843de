"""What a postings index is built from: the words of the snippets table, or one embedder's sparse postings.

A source tells its state (the index is fresh while it stands), plans a sync from the state the
index was written from, reads rows and turns them into postings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from docenrich.textindex.postings import Triples, bm25_triples, sparse_triples

_NONE = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class Plan:
    """One sync: index the ids in (max id, upto] (None: no range), index `again` anew (masking their
    old rows), mask the rows of `drop`, and look for removed snippets when check_removed."""

    upto: int | None
    again: np.ndarray = field(default_factory=lambda: _NONE)
    drop: np.ndarray = field(default_factory=lambda: _NONE)
    check_removed: bool = True


class WordSource:
    """Every snippet's text and context (heading, title) as FTS5 indexed them, scored by BM25."""

    def __init__(self, store):
        """Rows of this SQLite store."""
        self.store = store

    def state(self) -> tuple[int, int, int]:
        """(highest snippet id, snippets now, last in-place change)."""
        return self.store.text_index_state()

    @staticmethod
    def snippets(state: tuple) -> int:
        """How many snippets the store holds, by a state."""
        return state[1]

    def plan(self, old: tuple, new: tuple, max_id: int) -> Plan:
        """New ids by range; snippets changed in place (a batch saved again) indexed anew."""
        changed = self.store.text_changed_ids(old[2], new[2]) if new[2] > old[2] else _NONE
        return Plan(upto=new[0], again=changed[changed <= max_id])

    def rows(self, after: int, upto: int | None, limit: int, only: np.ndarray | None) -> dict:
        """Rows with their texts."""
        return self.store.text_rows(after, 2**62 if upto is None else upto, limit, only)

    def triples(self, rows: dict, start: int, avgdl: float | None) -> tuple[Triples, int]:
        """BM25 postings of the rows, and their total length."""
        return bm25_triples(rows["texts"], start, avgdl)

    def present(self, max_id: int, alive: int) -> np.ndarray | None:
        """The ids up to max_id still present, when fewer are than the index holds alive."""
        return self.store.text_present_ids(max_id, alive)


class SparseSource:
    """One embedder's learned-sparse postings (BGE-M3's lexical weights), summed by weight."""

    def __init__(self, store, embedder: str):
        """Postings of this embedder in this SQLite store."""
        self.store, self.embedder = store, embedder

    def state(self) -> tuple[int, int, int, int]:
        """(last sparse change, snippets ever removed, last in-place change, snippets now)."""
        return self.store.sparse_index_state(self.embedder)

    @staticmethod
    def snippets(state: tuple) -> int:
        """How many snippets the store holds, by a state."""
        return state[3]

    def plan(self, old: tuple, new: tuple, max_id: int) -> Plan:
        """Snippets whose postings were written since, indexed anew; those whose text changed, masked
        (their new postings come as changes of their own); removals looked for when any happened."""
        again = self.store.sparse_changed_ids(self.embedder, old[0], new[0]) if new[0] > old[0] else _NONE
        drop = self.store.text_changed_ids(old[2], new[2]) if new[2] > old[2] else _NONE
        return Plan(upto=None, again=again, drop=drop, check_removed=new[1] != old[1])

    def rows(self, after: int, upto: int | None, limit: int, only: np.ndarray | None) -> dict:
        """Rows with their weights."""
        return self.store.sparse_rows(self.embedder, only if only is not None else _NONE)

    def triples(self, rows: dict, start: int, avgdl: float | None) -> tuple[Triples, int]:
        """The rows' postings as they are stored."""
        return sparse_triples(rows["tokens"], rows["weights"], rows["row_of"] + start), 0

    def present(self, max_id: int, alive: int) -> np.ndarray | None:
        """Every snippet id up to max_id (removals happened: the index checks its rows against them)."""
        return self.store.text_present_ids(max_id, -1)
