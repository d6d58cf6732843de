"""PostgresStore: the PostgreSQL + pgvector backend, everything in one database that several hosts share.

What only PostgreSQL does is here: content as bytea rows, the tsvector index, the advisory locks
and the HNSW index per vector size; dense search is index.py.

The lexical words are cut and folded in Python (storage/terms.py), not by a text search
configuration: identifiers split at "_", ".", "-" exactly as on SQLite, diacritics fold without
the unaccent extension, and nothing depends on the server's locale. The tsvector is written as a
literal (word:position+weight), so its positions let an identifier query match as a phrase.
"""
from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR

from docenrich.storage.engine import postgres_engine
from docenrich.storage.postgres import schema
from docenrich.storage.postgres.index import PgVectorIndex, VectorFeatures, hnsw_index_sql
from docenrich.storage.store import CONTENT, Garbage, SQLStore
from docenrich.storage.tables import documents, images, pdfs, snippets
from docenrich.storage.terms import fold, query_terms, stem, stems, words

log = logging.getLogger(__name__)

# ts_rank_cd weights for {D, C, B, A}: the text is A, its context (heading, title) B, counting half.
_RANK_WEIGHTS = "{0.1, 0.2, 0.5, 1.0}"
# Normalisation 32: rank / (rank + 1), so scores stay in (0, 1) and higher is better.
_RANK_NORMALISATION = 32
_MAX_WORD = 256
_MAX_POSITIONS = 256  # what a tsvector keeps per lexeme


# The snippets table with its tsvector (a column only PostgreSQL has).
PG_SNIPPETS = snippets.to_metadata(sa.MetaData())
PG_SNIPPETS.append_column(sa.Column("lex", TSVECTOR))


def _quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def lex_vector(text: str, heading: str | None, title: str | None) -> str:
    """A tsvector literal of a snippet: its text's word stems weighted A, its context's weighted B."""
    positions: dict[str, list[str]] = {}
    pos = 0
    for weight, part in (("A", text), ("B", f"{heading or ''} {title or ''}")):
        pos += 1  # a gap, so no phrase runs from the text into its context
        for word in stems(part):
            pos += 1
            found = positions.setdefault(word[:_MAX_WORD], [])
            if len(found) < _MAX_POSITIONS:
                found.append(f"{min(pos, 16383)}{weight}")
    return " ".join(f"{_quote(w)}:{','.join(p)}" for w, p in positions.items())


def ts_query(query: str) -> str:
    """A tsquery literal: the query's terms OR-ed, an identifier a phrase (<->) of its folded, stemmed parts."""
    out = []
    for parts in query_terms(query):
        folded = [stem(fold(p)) for part in parts for p in words(part)]
        if folded:
            out.append("(" + " <-> ".join(_quote(p[:_MAX_WORD]) for p in folded) + ")")
    return " | ".join(out)


class PostgresStore(SQLStore):
    """PostgreSQL with pgvector; one engine (and pool) per database URL and process."""

    def __init__(self, database_url: str, *, ef_search: int = 0):
        """Connect, and bring the schema up to date (the vector extension included)."""
        self.database_url = database_url
        self.ef_search = int(ef_search)
        self._features: VectorFeatures | None = None
        self._open(postgres_engine(database_url), "Could not connect to the database")

    @property
    def vector_features(self) -> VectorFeatures:
        """What the database's pgvector can do (read once: the extension does not change under a store)."""
        if self._features is None:
            version = self._scalar(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            self._features = VectorFeatures.parse(version)
        return self._features

    def vector_index(self, embedder: str) -> PgVectorIndex:
        """Dense search for one embedder, run by the database (no vectors held in this process)."""
        return PgVectorIndex(self, embedder, ef_search=self.ef_search)

    def __repr__(self) -> str:
        return f"PostgresStore({self.database_url.split('@')[-1]!r})"

    _snippet_table = PG_SNIPPETS

    def _create_schema(self, conn: sa.Connection) -> None:
        schema.create(conn)

    def _lock(self, conn: sa.Connection, key: int) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    def _insert_order(self) -> sa.ColumnElement:
        return sa.literal_column("documents.seq")

    def _lex(self, text: str, heading: str | None, title: str | None) -> dict[str, Any]:
        return {"lex": sa.cast(lex_vector(text, heading, title), TSVECTOR)}

    def _new_dimension(self, conn: sa.Connection, dim: int) -> None:
        features = self.vector_features
        if dim <= features.max_dim:
            conn.exec_driver_sql(hnsw_index_sql(dim, half=features.halfvec))

    # ---- content as bytea rows

    def _put(self, conn: sa.Connection, table: sa.Table, found: dict[str, bytes]) -> None:
        key = table.primary_key.columns[0].name
        rows = [{key: name, "data": data} for name, data in found.items()]
        if rows:
            conn.execute(self._insert(table).on_conflict_do_nothing(), rows)

    def _drop_unused(self, conn: sa.Connection, garbage: Garbage) -> None:
        """Delete the images and PDFs no row uses any more (inside a transaction holding CONTENT_LOCK)."""
        if garbage.images:
            conn.execute(sa.delete(images).where(images.c.name.in_(sorted(garbage.images)), ~sa.exists().where(
                snippets.c.image == images.c.name)))
        if garbage.pdfs:
            conn.execute(sa.delete(pdfs).where(pdfs.c.sha256.in_(sorted(garbage.pdfs)), ~sa.exists().where(
                documents.c.sha256 == pdfs.c.sha256)))

    def _load(self, table: sa.Table, *key: Any) -> bytes | None:
        where = [column == value for column, value in zip(table.primary_key, key, strict=True)]
        data = self._scalar(sa.select(table.c.data).where(*where))
        return None if data is None else bytes(data)

    def _save(self, table: sa.Table, data: bytes, doc_id: str, *key: Any) -> None:
        names = [c.name for c in table.primary_key]
        values = sa.select(documents.c.id, *map(sa.literal, key), sa.literal(data, sa.LargeBinary))
        insert = self._insert(table).from_select([*names, "data"], values.where(documents.c.id == doc_id))
        with self._write(CONTENT[table.name]) as conn:
            conn.execute(insert.on_conflict_do_update(index_elements=names,
                                                      set_={"data": insert.excluded.data}))

    # ---- lexical search

    def _lexical_query(self, query: str, conds: list[sa.ColumnElement]) -> sa.Select | None:
        expr = ts_query(query)
        if not expr:
            return None
        s, tsq = PG_SNIPPETS, sa.cast(expr, TSQUERY)
        score = sa.func.ts_rank_cd(sa.literal_column(f"'{_RANK_WEIGHTS}'::float4[]"), s.c.lex, tsq,
                                   _RANK_NORMALISATION, type_=sa.Float).label("score")
        return sa.select(s.c.id, score).where(s.c.lex.op("@@")(tsq), *conds).order_by(score.desc(), s.c.id)
