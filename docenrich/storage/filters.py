"""A SearchFilter as SQL conditions (SQLAlchemy Core), written once for every backend."""
from __future__ import annotations

import sqlalchemy as sa

from docenrich.filters import SearchFilter, like_pattern
from docenrich.storage.tables import document_collections, documents, snippets


def _between(table: sa.FromClause, name: str, low, high, inclusive_high: bool) -> list[sa.ColumnElement]:
    """`name >= low` and `name < high` (`<=` if inclusive_high) for the bounds set (none: no column)."""
    if low is None and high is None:
        return []
    column = table.c[name]
    where = [] if low is None else [column >= low]
    if high is not None:
        where.append(column <= high if inclusive_high else column < high)
    return where


def document_conditions(f: SearchFilter, d: sa.FromClause = documents) -> list[sa.ColumnElement]:
    """Conditions over the documents table (or an alias of it)."""
    where: list[sa.ColumnElement] = []
    if f.document_ids is not None:
        where.append(d.c.id.in_(f.document_ids))
    if f.collections is not None:
        dc = document_collections
        where.append(d.c.id.in_(sa.select(dc.c.document_id).where(dc.c.collection.in_(f.collections))))
    if f.filename is not None:
        where.append(sa.func.lower(d.c.filename).like(sa.func.lower(like_pattern(f.filename)), escape="\\"))
    return where + _between(d, "created_at", f.uploaded_after, f.uploaded_before, inclusive_high=False)


def snippet_conditions(f: SearchFilter | None, s: sa.FromClause = snippets) -> list[sa.ColumnElement]:
    """Conditions over a table with document_id (and kind and page, for the snippet ones): the
    document conditions as a subquery."""
    if f is None:
        return []
    where: list[sa.ColumnElement] = []
    if f.by_document():
        if all(v is None for v in (f.collections, f.filename, f.uploaded_after, f.uploaded_before)):
            where.append(s.c.document_id.in_(f.document_ids))
        else:
            where.append(s.c.document_id.in_(sa.select(documents.c.id).where(*document_conditions(f))))
    if f.kinds is not None:
        where.append(s.c.kind.in_(f.kinds))
    elif f.excluded:
        where.append(s.c.kind.not_in(f.excluded))
    return where + _between(s, "page", f.page_from, f.page_to, inclusive_high=True)
