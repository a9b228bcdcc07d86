"""Words normalised for full-text search, the same way on both sides of a match.

Milvus analyses the full-text fields with jieba and a lowercase filter (shopvec.store.milvus):
Milvus Lite 3.2 has no stemming filter, so "Tshirts" in a query would not match "Tshirt" in
a title, nor "Dresses" "dress", and "T-shirt" would be two words that match neither. Before a
product's words are stored and before a query's words are searched, `index_terms` rewrites
each word of Latin letters:

- a light English stemmer, S-stemmer style (Harman 1991, with Porter's "sses" rule): plural
  endings go, "ies" becomes "y", and "xes", "ches", "shes", "sses" lose their "es"; words
  ending in "ss", "us" or "is", and words of three letters or fewer, stay as they are;
- a possessive "'s" goes ("Men's" is "men");
- a hyphenated compound is kept as its parts and joined as well ("t-shirt": "t", "shirt" and
  "tshirt"), so the spellings with and without the hyphen meet.

Words in other scripts (Chinese, for jieba to cut) and digits pass through untouched. The
stemmer conflates, it does not lemmatise: "jeans" becomes "jean" on both sides, which is what
matching needs. `query_terms` adds to a query's normalised words those it changed, as typed,
so that a collection whose words were stored before the normalisation still matches them.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from typing import Any

__all__ = ["index_terms", "jieba_loaded", "query_terms", "stem"]

_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_WORD = re.compile(
    rf"[{_LETTERS}]+(?:['\u2019][{_LETTERS}]+)?(?:-[{_LETTERS}]+(?:['\u2019][{_LETTERS}]+)?)*"
)
_POSSESSIVE = re.compile(r"['\u2019]s$")


def stem(word: str) -> str:
    """One lowercase word, its plural ending removed (see the module's note)."""
    if len(word) <= 3:
        return word
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith(("xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _part(word: str) -> str:
    return stem(_POSSESSIVE.sub("", word).replace("'", "").replace("\u2019", ""))


def _normalised(match: re.Match[str]) -> str:
    """The word normalised; as it was when only its case would change (the analyzer
    lowercases after jieba has cut, and jieba's dictionary knows "T恤", not "t恤")."""
    word = match.group()
    parts = [_part(p) for p in word.lower().split("-")]
    if len(parts) > 1:
        return " ".join([*parts, stem("".join(parts))])
    return word if parts[0] == word.lower() else parts[0]


def index_terms(text: str) -> str:
    """text with each word of Latin letters normalised (lowercase where it changed); the
    rest as it was."""
    return _WORD.sub(_normalised, text)


def query_terms(text: str) -> str:
    """A query's words for full-text search: normalised as products' words are, followed by
    the single words that normalising changed, as typed (lowercased)."""
    changed: list[str] = []

    def normalise(match: re.Match[str]) -> str:
        out = _normalised(match)
        typed = match.group().lower()
        if out.lower() != typed and typed.isalpha() and typed not in changed:
            changed.append(typed)
        return out

    return " ".join([_WORD.sub(normalise, text), *changed])


@cache
def jieba_loaded() -> Any:
    """jieba with its dictionary loaded: about a second and some 70 MB, once a process. jieba
    loads it on the first cut otherwise, which makes the first query with words, or the
    embedded Milvus's first write of products' words, wait for it."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba
