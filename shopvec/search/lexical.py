"""Hybrid lexical + dense search: which scenarios use it, and what each result owes to words.

A hybrid search sends the primary leg's vector and the query's words to Milvus together
(`ProductStore.hybrid_search`): the vector field and a BM25 full-text field, merged by the
library's ranker (RRF or weighted). Which full-text field a scenario matches:

- text2product and cross: `words_sparse`, the product's words and its photos' colour words;
- text2image: `photo_sparse`, the photos' own words (their colour words) only, so that words
  to photos still finds products by their photos, never by their titles.

Each scenario has its mode: dense, rrf or weighted (the ranker of a hybrid search). Photo
queries (image2image) and more_like_this have no words and stay dense. A request with
ranker rrf or weighted combines dense legs itself (shopvec.search.combine) and stays dense too.

The full-text leg is also searched alone (same words, filter and limit, so the same ranking
the merge sees), before the hybrid search, for two things:

- the query's **coverage**: the largest share of the query's words that one of the products
  it finds holds. Words the catalogue does not use cannot match, and a query that matches
  by one word of several (a Chinese query on an English catalogue matching by its colour
  alone) is better ranked by its vectors. The weighted ranker gives the words
  `lexical_weight * coverage ** 3`, so a query the best match holds whole gets the full
  weight and one it holds half an eighth of it. RRF has no weights and takes the legs as
  they come.
- the explanation: Milvus answers a hybrid search with the merged score only, so the lexical
  part of each score is worked out with the ranker's own formula; the rest is the dense part.

Words are compared as Milvus's analyzer cuts them: jieba, lowercased (shopvec.store.milvus),
after the normalisation both sides get (shopvec.terms).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from schemas.search import Retrieval
from shopvec.store.base import Hit, HybridRanker, LexicalField
from shopvec.terms import index_terms, jieba_loaded

__all__ = [
    "DEFAULT_LEXICAL_WEIGHT",
    "DEFAULT_RETRIEVAL",
    "DEFAULT_RRF_K",
    "HYBRID_SCENARIOS",
    "LEXICAL_FIELD",
    "Mode",
    "RetrievalConfig",
    "analysed_words",
    "coverage",
    "covered",
    "lexical_parts",
]

LEXICAL_FIELD: dict[str, LexicalField] = {
    "text2image": "photo_sparse",
    "text2product": "words_sparse",
    "cross": "words_sparse",
}
HYBRID_SCENARIOS = tuple(LEXICAL_FIELD)
"""The scenarios that can search words as well as vectors."""

Mode = Literal["dense", "rrf", "weighted"]
"""Per scenario: vectors only, or hybrid merged by Milvus's RRFRanker or WeightedRanker."""

DEFAULT_RETRIEVAL: dict[str, Mode] = {
    "text2image": "rrf",
    "text2product": "weighted",
    "cross": "weighted",
}
"""Chosen on the development data (docs/evaluation.md, "Hybrid lexical + dense")."""
DEFAULT_RRF_K = 60
DEFAULT_LEXICAL_WEIGHT = 0.4
COVERAGE_POWER = 3
"""The weighted ranker's words weigh lexical_weight * coverage ** COVERAGE_POWER."""
_WORDLIKE = re.compile(r"\w")
_WORDS = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class RetrievalConfig:
    modes: Mapping[str, Mode] = field(default_factory=lambda: dict(DEFAULT_RETRIEVAL))
    rrf_k: int = DEFAULT_RRF_K
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT

    def ranker(self, scenario: str, requested: Retrieval | None = None) -> HybridRanker | None:
        """The ranker of a hybrid search in this scenario; None: dense. A request asking for
        hybrid in a scenario configured dense gets rrf."""
        if scenario not in LEXICAL_FIELD or requested == "dense":
            return None
        mode = self.modes.get(scenario, "dense")
        if mode == "dense":
            if requested != "hybrid":
                return None
            mode = "rrf"
        return HybridRanker(mode, self.rrf_k, self.lexical_weight)

    @classmethod
    def dense(cls) -> RetrievalConfig:
        return cls(modes={})


def covered(ranker: HybridRanker, share: float) -> HybridRanker:
    """The ranker for a query of this coverage: the weighted ranker's words scaled by it."""
    if ranker.kind != "weighted":
        return ranker
    return replace(ranker, lexical_weight=ranker.lexical_weight * share**COVERAGE_POWER)


def analysed_words(text: str) -> set[str]:
    """The words full-text search matches text by: normalised (shopvec.terms), cut by jieba and
    lowercased, as Milvus's analyzer does; punctuation and spaces are not words."""
    cut = jieba_loaded().lcut(index_terms(text))
    return {w.lower() for w in cut if _WORDLIKE.search(w)}


def coverage(query: str, hits: Sequence[Hit], source: str, *, best_of: int = 10) -> float:
    """The largest share of the query's words that one of the first `best_of` hits holds in
    its `source` field; 1.0 for a query without words, 0.0 when nothing was found. A stored
    field is not cut by jieba (a description can run to kilobytes): a word of letters and
    digits must be one of its words, any other (Chinese) a part of it."""
    wanted = analysed_words(query)
    if not wanted:
        return 1.0
    best = 0
    for hit in hits[:best_of]:
        text = str(hit.fields.get(source) or "").lower()
        words = set(_WORDS.findall(text))
        held = sum(w in words if _WORDS.fullmatch(w) else w in text for w in wanted)
        best = max(best, held)
        if best == len(wanted):
            break
    return best / len(wanted)


def lexical_parts(
    hits: list[Hit], lexical_hits: list[Hit], ranker: HybridRanker
) -> dict[str, dict[str, Any]]:
    """Per product id of `hits` (a hybrid search's), what its score owes to the words:
    the BM25 score and rank the full-text leg gave it, the ranker's lexical part, and the
    dense part (the rest). A product the full-text leg did not return owes it nothing."""
    found = {h.id: (rank, h.score) for rank, h in enumerate(lexical_hits, start=1)}
    out: dict[str, dict[str, Any]] = {}
    for hit in hits:
        rank, bm25 = found.get(hit.id, (None, 0.0))
        if rank is None:
            part = 0.0
        elif ranker.kind == "rrf":
            part = 1.0 / (ranker.k + rank)
        else:
            part = ranker.lexical_weight * 2.0 * math.atan(bm25) / math.pi
        out[hit.id] = {
            "bm25": round(bm25, 6),
            "lexical_rank": rank,
            "lexical_part": round(part, 6),
            "dense_part": round(hit.score - part, 6),
        }
    return out
