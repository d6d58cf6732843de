"""Lexical search at scale: BM25 and learned-sparse indexes in memory-mapped postings every process of a host shares."""
from __future__ import annotations

from docenrich.textindex.index import SparseIndex, WordIndex

__all__ = ["SparseIndex", "WordIndex"]
