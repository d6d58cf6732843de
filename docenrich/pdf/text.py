"""Text cleanup: junk glyphs, whitespace, ligatures and presentation forms, visual-order Arabic."""
from __future__ import annotations

import re
import unicodedata

_SPACE_RE = re.compile(r"[\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
# Control chars, U+FFFD (unknown glyph), zero-width space, BOM and private-use glyphs
# carry nothing searchable. ZWJ/ZWNJ stay: Persian and Indic spelling needs them.
_JUNK_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\u200b\u2060\ufeff\ue000-\uf8ff]")
# Only compatibility blocks go through NFKC: Latin ligatures, Arabic/Hebrew presentation
# forms and full-width forms. NFKC on everything would also rewrite ², ½, ™, µ, etc.
_COMPAT_RE = re.compile(r"[\ufb00-\ufdff\ufe70-\ufeff\uff00-\uffef]+")
_ARABIC_FORMS_RE = re.compile(r"[\ufb50-\ufdff\ufe70-\ufefc]")
_RTL_RE = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
_WORD_CHAR_RE = re.compile(r"\w", re.UNICODE)


def _clean_text(text: str) -> str:
    text = _JUNK_RE.sub("", text)
    if _ARABIC_FORMS_RE.search(text):
        text = _fix_visual_rtl(text)
    text = _COMPAT_RE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    return _SPACE_RE.sub(" ", text)


def _meaningful(text: str) -> bool:
    return bool(_WORD_CHAR_RE.search(text))


def _form(ch: str) -> str:
    dec = unicodedata.decomposition(ch)
    return dec[1:dec.index(">")] if dec.startswith("<") else ""


def _fix_visual_rtl(line: str) -> str:
    """Reverse Arabic words that a producer wrote in visual (left-to-right) order.

    Presentation forms tell the order: a logical word starts with an initial/isolated
    form and ends with a final/isolated one; a visually stored word is the mirror image.
    """
    words = line.split(" ")
    flips = keeps = 0
    for w in words:
        letters = [c for c in w if "\ufe70" <= c <= "\ufefc" or "\ufb50" <= c <= "\ufdff"]
        if len(letters) < 2:
            continue
        first, last = _form(letters[0]), _form(letters[-1])
        if first == "final" and last in ("initial", "isolated"):
            flips += 1
        elif first in ("initial", "isolated") and last in ("final", "isolated"):
            keeps += 1
    if flips <= keeps:
        return line
    # Reverse each RTL word and the order of consecutive RTL words.
    out: list[str] = []
    run: list[str] = []
    for w in words:
        if _RTL_RE.search(w):
            run.append(w[::-1])
        else:
            out.extend(reversed(run))
            run = []
            out.append(w)
    out.extend(reversed(run))
    return " ".join(out)
