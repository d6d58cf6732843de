"""Lexical search at scale: a BM25 word index in memory-mapped postings every process of a host shares."""
from __future__ import annotations

from docenrich.textindex.index import WordIndex

__all__ = ["WordIndex"]
