"""Where a search result sits: its breadcrumb (document title, then heading path) and the snippets
just before and after it in its document's reading order."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from docenrich.records import StoredSnippet

# Neighbours a search returns at most on each side of a hit: enough to read a passage in its
# surroundings, few enough that a page of ten results stays a page.
MAX_CONTEXT = 5


class WithContext(Protocol):
    """A search hit that can carry its neighbours."""

    snippet: StoredSnippet
    before: list[StoredSnippet]
    after: list[StoredSnippet]


def breadcrumb(snip: StoredSnippet, title: str | None = None) -> list[str]:
    """Where a snippet sits: its document's title, then its heading path (chapter › … › topic)."""
    meta = snip.meta or {}
    path = meta.get("path")
    if not isinstance(path, list):
        path = [meta["heading"]] if meta.get("heading") else []
    head = meta.get("title") or title
    return [str(p) for p in ([head] if head else []) + path]


def neighbours(window: list[StoredSnippet], snippet_id: int, n: int) -> tuple[list[StoredSnippet], list[StoredSnippet]]:
    """The n snippets before and the n after one snippet, from a window of its document in reading
    order that holds them (as snippets_around returns); both empty when the snippet is not in it."""
    at = next((i for i, snip in enumerate(window) if snip.id == snippet_id), None)
    if at is None or n <= 0:
        return [], []
    return window[max(0, at - n) : at], window[at + 1 : at + 1 + n]


def attach_neighbours(store, hits: Iterable[WithContext], n: int) -> int:
    """Give each hit its n neighbours either side; one store query per document among the hits.

    Returns the number of queries made. Neighbours are every kind of snippet, whatever the search's
    filter: they are the text around the hit as the document reads, not more results.
    """
    n = max(0, min(int(n), MAX_CONTEXT))
    if not n:
        return 0
    by_document: dict[str, list[WithContext]] = {}
    for hit in hits:
        by_document.setdefault(hit.snippet.document_id, []).append(hit)
    for doc_id, group in by_document.items():
        window = store.snippets_around(doc_id, [hit.snippet.ordinal for hit in group], n)
        for hit in group:
            hit.before, hit.after = neighbours(window, hit.snippet.id, n)
    return len(by_document)
