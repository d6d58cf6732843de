"""A SearchFilter as SQL conditions, written once for both backends (only the placeholder differs)."""
from __future__ import annotations

from docenrich.filters import SearchFilter, like_pattern


def _in(column: str, values: tuple[str, ...], ph: str, negate: bool = False) -> str:
    if not values:
        return "1 = 1" if negate else "1 = 0"
    return f"{column} {'NOT IN' if negate else 'IN'} ({', '.join([ph] * len(values))})"


def _between(where: list[str], args: list, column: str, low, high, high_op: str, ph: str) -> None:
    """Append `column >= low` and `column <high_op> high` for the bounds that are set."""
    for value, op in ((low, ">="), (high, high_op)):
        if value is not None:
            where.append(f"{column} {op} {ph}")
            args.append(value)


def document_conditions(f: SearchFilter, ph: str, doc: str = "d") -> tuple[list[str], list]:
    """Conditions over the documents table (aliased `doc`) and their arguments."""
    where: list[str] = []
    args: list = []
    if f.document_ids is not None:
        where.append(_in(f"{doc}.id", f.document_ids, ph))
        args += f.document_ids
    if f.collections is not None:
        where.append(f"{doc}.id IN (SELECT dc.document_id FROM document_collections dc "
                     f"WHERE {_in('dc.collection', f.collections, ph)})")
        args += f.collections
    if f.filename is not None:
        where.append(f"lower({doc}.filename) LIKE lower({ph}) ESCAPE '\\'")
        args.append(like_pattern(f.filename))
    _between(where, args, f"{doc}.created_at", f.uploaded_after, f.uploaded_before, "<", ph)
    return where, args


def snippet_conditions(f: SearchFilter | None, ph: str, alias: str = "s") -> tuple[list[str], list]:
    """Conditions over the snippets table (aliased `alias`), the document ones as a subquery."""
    if f is None:
        return [], []
    where, args = [], []
    if f.by_document():
        only_ids = all(v is None for v in (f.collections, f.filename, f.uploaded_after, f.uploaded_before))
        if only_ids:
            where.append(_in(f"{alias}.document_id", f.document_ids, ph))
            args += f.document_ids
        else:
            conds, cargs = document_conditions(f, ph)
            where.append(f"{alias}.document_id IN (SELECT d.id FROM documents d WHERE {' AND '.join(conds)})")
            args += cargs
    if f.kinds is not None:
        where.append(_in(f"{alias}.kind", f.kinds, ph))
        args += f.kinds
    elif f.excluded:
        where.append(_in(f"{alias}.kind", f.excluded, ph, negate=True))
        args += f.excluded
    _between(where, args, f"{alias}.page", f.page_from, f.page_to, "<=", ph)
    return where, args


def document_ids_sql(f: SearchFilter, ph: str) -> tuple[str, list]:
    """A query for the ids of the documents the filter's document conditions allow."""
    conds, args = document_conditions(f, ph)
    return f"SELECT d.id FROM documents d WHERE {' AND '.join(conds) or '1 = 1'}", args
