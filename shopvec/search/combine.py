"""Combining the legs of a search, and what each result says about why it is there.

rrf: reciprocal rank fusion, sum over legs of 1 / (k + rank); robust to scores on different
scales. weighted: the legs' similarities mixed with the collection's fusion weights (the fused
leg half, the words and the photo legs sharing the other half as image_weight says); a product a
leg did not return counts that leg's lowest returned score, an upper bound on what it missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shopvec.fusion import Fusion
from shopvec.search.plan import Leg
from shopvec.store.base import Hit

__all__ = ["RRF_K", "Scored", "combine"]

RRF_K = 60


@dataclass
class Scored:
    hit: Hit
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    """Per vector field: the similarity that leg found for this product."""


def _leg_weights(legs: list[Leg], fusion: Fusion) -> dict[str, float]:
    w = fusion.image_weight
    raw: dict[str, float] = {}
    for leg in legs:
        if leg.field == "fused_vec":
            raw[leg.field] = 0.5
        elif leg.field == "text_vec":
            raw[leg.field] = 0.5 * (1 - w)
        else:
            raw[leg.field] = 0.5 * w
    total = sum(raw.values()) or 1.0
    return {k: v / total for k, v in raw.items()}


def combine(legs: list[Leg], ranker: str, fusion: Fusion) -> tuple[list[Scored], dict[str, Any]]:
    """Returns the ranking and the weights it used (for explanations)."""
    by_id: dict[str, Scored] = {}
    for leg in legs:
        for hit in leg.hits:
            scored = by_id.setdefault(hit.id, Scored(hit, 0.0))
            scored.scores[leg.field] = hit.score
            parts = leg.explained.get(hit.id)
            if parts is not None and leg.lexical is not None:
                # A hybrid leg's score is the ranker's: split into what words and vector gave.
                scored.scores[leg.field] = parts["dense_part"]
                if parts["lexical_rank"] is not None:
                    scored.scores[leg.lexical] = parts["bm25"]
    if len(legs) <= 1 or ranker == "fused":
        primary = legs[0].hits if legs else []
        return [Scored(h, h.score, dict(by_id[h.id].scores)) for h in primary], {}
    if ranker == "rrf":
        for leg in legs:
            for rank, hit in enumerate(leg.hits, start=1):
                by_id[hit.id].score += 1.0 / (RRF_K + rank)
        info: dict[str, Any] = {"ranker": "rrf", "k": RRF_K}
    else:
        weights = _leg_weights(legs, fusion)
        floors = {leg.field: min((h.score for h in leg.hits), default=0.0) for leg in legs}
        for scored in by_id.values():
            scored.score = sum(
                weights[leg.field] * scored.scores.get(leg.field, floors[leg.field]) for leg in legs
            )
        info = {"ranker": "weighted", "weights": weights}
    ranking = sorted(by_id.values(), key=lambda s: (-s.score, s.hit.id))
    return ranking, info
