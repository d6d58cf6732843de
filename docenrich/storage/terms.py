"""Query terms for lexical search, the same for every backend: identifiers kept as phrases."""
from __future__ import annotations

import functools
import re
import threading
import unicodedata

import snowballstemmer

# Query words matched by nearly every snippet: they cost time and add nothing to the ranking.
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i if in into is it its my of on or "
    "should so that the their then there these this to was we what when where which who why "
    "will with you your".split()
)
# One query term: a run of letters/digits joined by identifier punctuation (R_MAKEVARS_USER,
# foo.bar(), --no-same-owner, 2.0.1, C++).
_TERM = re.compile(r"\w+(?:[._:/+'\-]+\w+)*", re.UNICODE)
_PART = re.compile(r"\w+", re.UNICODE)
# A word of indexed text: letters and digits only, so "_" splits identifiers like the query side.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_TERMS = 32
# SQLite's porter tokenizer leaves words outside these lengths as they are.
_STEM_LENGTHS = range(3, 65)
_stemmers = threading.local()  # a snowball stemmer keeps state while it works: one per thread


def query_terms(query: str) -> list[list[str]]:
    """The query's terms, each a list of lower-cased parts (an identifier has several), deduplicated."""
    text = unicodedata.normalize("NFKC", query)
    terms: list[list[str]] = []
    seen: set[str] = set()
    for match in _TERM.finditer(text):
        parts = [p.lower() for p in _PART.findall(match.group().replace("_", " "))]
        if not parts:
            continue
        key = " ".join(parts)
        if key in seen or (len(parts) == 1 and key in STOPWORDS):
            continue
        seen.add(key)
        terms.append(parts)
    if not terms:
        # A query of stopwords only still deserves an answer.
        terms = [[w.lower()] for w in _PART.findall(text)[:MAX_TERMS]]
    return terms[:MAX_TERMS]


def fold(word: str) -> str:
    """A word lower-cased without diacritics (ö → o; ß stays ß, as SQLite's unicode61 does)."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def words(text: str) -> list[str]:
    """The folded words of a text, in order, as the lexical index stores them."""
    return [fold(w) for w in _WORD.findall(unicodedata.normalize("NFKC", text or ""))]


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A folded word's Porter stem, as SQLite's porter tokenizer makes it ("vanishes" -> "vanish"),
    so "computing the roots" finds "Compute the roots" on both backends."""
    if len(word) not in _STEM_LENGTHS or not word.isascii():
        return word
    stemmer = getattr(_stemmers, "porter", None)
    if stemmer is None:
        stemmer = _stemmers.porter = snowballstemmer.stemmer("porter")
    return stemmer.stemWord(word)


def stems(text: str) -> list[str]:
    """The stems of a text's words, in order, as the PostgreSQL lexical index stores them."""
    return [stem(w) for w in words(text)]
