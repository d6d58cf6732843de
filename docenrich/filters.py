"""SearchFilter: which snippets a search may return, applied inside every retriever.

A filter names collections, documents, snippet kinds, a page range, a filename glob and an
upload-date range. Every retriever (lexical, sparse, dense) applies it in its own query, never
to a top N afterwards, so a scoped search finds a small collection's snippets however many
other documents say the same words.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace

# The kinds of snippet extraction makes ("page": a whole page, for a page without a text layer).
SNIPPET_KINDS = ("text", "table", "figure", "toc", "page")
MAX_COLLECTIONS = 20  # names per request: each is looked up, and a request must stay cheap
MAX_DOCUMENTS = 100


@dataclass(frozen=True)
class SearchFilter:
    """The conditions a snippet must meet to be found; None (or empty) means no condition."""

    collections: tuple[str, ...] | None = None  # in any of these collections
    document_ids: tuple[str, ...] | None = None  # in one of these documents
    kinds: tuple[str, ...] | None = None  # only these snippet kinds
    exclude_kinds: tuple[str, ...] = ()  # never these kinds (unless named in `kinds`)
    page_from: int | None = None  # first page, 1-based, inclusive
    page_to: int | None = None  # last page, inclusive
    filename: str | None = None  # a glob over the uploaded file name: * and ?, case-insensitive
    uploaded_after: float | None = None  # epoch seconds, inclusive
    uploaded_before: float | None = None  # epoch seconds, exclusive

    @property
    def excluded(self) -> tuple[str, ...]:
        """The kinds left out: the excluded ones not asked for by name."""
        return tuple(sorted(set(self.exclude_kinds) - set(self.kinds or ())))

    def by_document(self) -> bool:
        """Whether any condition is about the document (collection, id, file name, upload date)."""
        return any(v is not None for v in (self.collections, self.document_ids, self.filename,
                                           self.uploaded_after, self.uploaded_before))

    def by_snippet(self) -> bool:
        """Whether any condition is about the snippet itself (kind or page)."""
        return bool(self.kinds is not None or self.excluded or self.page_from is not None
                    or self.page_to is not None)

    def document_part(self) -> SearchFilter:
        """Only the conditions about the document."""
        return SearchFilter(self.collections, self.document_ids, filename=self.filename,
                            uploaded_after=self.uploaded_after, uploaded_before=self.uploaded_before)

    def snippet_part(self) -> SearchFilter:
        """Only the conditions about the snippet itself."""
        return SearchFilter(kinds=self.kinds, exclude_kinds=self.exclude_kinds, page_from=self.page_from,
                            page_to=self.page_to)

    def within_document(self, document_id: str | None) -> SearchFilter:
        """This filter narrowed to one document (None: unchanged)."""
        if document_id is None:
            return self
        ids = (document_id,) if self.document_ids is None or document_id in self.document_ids else ()
        return replace(self, document_ids=ids)

    def describe(self) -> dict:
        """The conditions set, as JSON-ready values (for a search result)."""
        out: dict = {}
        for name in ("collections", "document_ids", "kinds"):
            if getattr(self, name) is not None:
                out[name] = list(getattr(self, name))
        for name in ("page_from", "page_to", "filename"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("uploaded_after", "uploaded_before"):
            if getattr(self, name) is not None:
                out[name] = dt.datetime.fromtimestamp(getattr(self, name), dt.timezone.utc).isoformat()
        return out


def merged(f: SearchFilter | None, document_id: str | None = None, exclude_kinds: Iterable[str] = ()
           ) -> SearchFilter | None:
    """A filter with an older call's document and excluded kinds folded in (None: no condition)."""
    if document_id is None and not exclude_kinds:
        return f
    f = f or SearchFilter()
    if exclude_kinds:
        f = replace(f, exclude_kinds=tuple(sorted(set(f.exclude_kinds) | set(exclude_kinds))))
    return f.within_document(document_id)


def combined(f: SearchFilter | None, document_id: str | None = None,
             document_ids: Iterable[str] | None = None) -> SearchFilter | None:
    """A dense index's filter with its older arguments (one document, a set of them) folded in."""
    if document_ids is not None:
        f = replace(f or SearchFilter(), document_ids=tuple(
            d for d in sorted(document_ids) if f is None or f.document_ids is None or d in f.document_ids))
    if document_id is not None:
        f = (f or SearchFilter()).within_document(document_id)
    return f


def build_filter(
    *, collections: Iterable[str] | None = None, document_ids: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None, exclude_kinds: Iterable[str] = (), pages: str | None = None,
    filename: str | None = None, uploaded_after: str | None = None, uploaded_before: str | None = None,
) -> SearchFilter:
    """A SearchFilter from request-style values; ValueError saying what is wrong."""
    cols = None if collections is None else tuple(dict.fromkeys(collections))
    if cols is not None and len(cols) > MAX_COLLECTIONS:
        raise ValueError(f"At most {MAX_COLLECTIONS} collections per request ({len(cols)} given).")
    docs = None if document_ids is None else tuple(dict.fromkeys(d for d in document_ids if d))
    if docs is not None and len(docs) > MAX_DOCUMENTS:
        raise ValueError(f"At most {MAX_DOCUMENTS} documents per request ({len(docs)} given).")
    page_from, page_to = parse_pages(pages)
    after, before = parse_date(uploaded_after, "uploaded_after"), parse_date(uploaded_before, "uploaded_before", True)
    if after is not None and before is not None and after >= before:
        raise ValueError("uploaded_after must come before uploaded_before.")
    glob = (filename or "").strip() or None
    if glob is not None and len(glob) > 200:
        raise ValueError("The filename pattern is too long (at most 200 characters).")
    kind_list = None if kinds is None else tuple(sorted({k.strip() for k in kinds if k.strip()})) or None
    return SearchFilter(cols, docs, kind_list, tuple(sorted(set(exclude_kinds))), page_from, page_to, glob,
                        after, before)


def parse_pages(text: str | None) -> tuple[int | None, int | None]:
    """(first, last) from "5", "5-9", "5-" or "-9" (1-based, inclusive); ValueError otherwise."""
    text = (text or "").strip()
    if not text:
        return None, None
    lo, sep, hi = text.partition("-")
    try:
        first = int(lo) if lo.strip() else None
        last = (int(hi) if hi.strip() else None) if sep else first
    except ValueError:
        raise ValueError(f"pages must look like 5, 5-9, 5- or -9 (got {text!r}).") from None
    if (first is not None and first < 1) or (last is not None and last < 1):
        raise ValueError("Pages are numbered from 1.")
    if first is not None and last is not None and first > last:
        raise ValueError(f"The page range {text!r} ends before it starts.")
    return first, last


def parse_date(text: str | None, name: str, end_of_day: bool = False) -> float | None:
    """Epoch seconds of an ISO date or date-time (UTC unless it says otherwise); a bare date
    used as an upper bound means the end of that day."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end_of_day else 0)
            when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        else:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ValueError(f"{name} must be an ISO date such as 2026-01-31 (got {text!r}).") from None
    return when.timestamp()


def like_pattern(glob: str) -> str:
    """A glob (* and ?) as a LIKE pattern with backslash escapes."""
    out = []
    for ch in glob:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)
