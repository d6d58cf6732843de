"""Word stems: PostgreSQL's lexical index stems as SQLite's porter tokenizer does."""
from __future__ import annotations

import sqlite3

from docenrich.storage.sqlite.schema import FTS_TOKENIZER
from docenrich.storage.terms import stem, stems

WORDS = ("polynomial vanishes roots computing plotting axes logscale multiplot eigenvalues interpolation "
         "generalization conditional relational agreed sized caresses ponies hopefulness a an ox "
         "r_makevars_user größenänderung переменных").split()


def test_stems_are_the_sqlite_porter_tokenizers():
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE f USING fts5(t, tokenize = '{FTS_TOKENIZER}')")
    conn.executemany("INSERT INTO f VALUES (?)", [(w,) for w in WORDS])
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(f, 'row')")
    sqlite_terms = {row[0] for row in conn.execute("SELECT term FROM v")}
    ours = {s for w in WORDS for s in stems(w)}
    assert ours == sqlite_terms
    assert stem("vanishes") == stem("vanish") == "vanish" and stem("ox") == "ox"
