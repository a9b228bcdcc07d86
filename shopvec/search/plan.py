"""What a request searches: the scenario's legs (a vector field and a query vector each).

- image2image: visual_vec with the photo's visual vector (products with a photo);
- text2image: image_vec with the words' joint vector (products with a photo, whatever their
  titles say);
- text2product and cross: fused_vec with the fused query (words, photo, or both);
- more_like_this: fused_vec with the product's own fused vector, the product left out.

The first leg is the primary one. With ranker rrf or weighted the other modalities are searched
as further legs and combined (see shopvec.search.combine). A hybrid search gives the primary
leg the query's words and a full-text field as well (see shopvec.search.lexical).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from schemas.search import Scenario, SearchError, SearchRequest
from shopvec.fusion import Fusion
from shopvec.store.base import (
    Hit,
    HybridRanker,
    LexicalField,
    ProductStore,
    SearchFilter,
    VectorField,
)

__all__ = ["PRIMARY_FIELD", "Leg", "Plan", "filters_from_request", "legs_for", "run_legs"]

PRIMARY_FIELD: dict[str, VectorField] = {
    "image2image": "visual_vec",
    "text2image": "image_vec",
    "text2product": "fused_vec",
    "cross": "fused_vec",
    "recommend": "fused_vec",
    "more_like_this": "fused_vec",
}


def filters_from_request(
    request: SearchRequest, field: VectorField, exclude: tuple[str, ...] = ()
) -> SearchFilter:
    f = request.filters
    return SearchFilter(
        category=f.category if f else None,
        brand=f.brand if f else None,
        price_min=f.price_min if f else None,
        price_max=f.price_max if f else None,
        in_stock=f.in_stock if f else None,
        attributes=dict(f.attributes) if f else {},
        require_image=field in ("visual_vec", "image_vec"),
        require_text=field == "text_vec",
        exclude_ids=exclude,
    )


@dataclass
class Leg:
    field: VectorField
    vector: np.ndarray
    limit: int
    filter: SearchFilter
    hits: list[Hit] = dc_field(default_factory=list)
    with_vectors: tuple[VectorField, ...] = ()
    """Vector fields the hits also carry (the store's search returns them)."""
    lexical: LexicalField | None = None
    """A hybrid leg's full-text field; its words are `text`, its ranker `ranker`."""
    text: str = ""
    ranker: HybridRanker | None = None
    lexical_hits: list[Hit] | None = None
    """The full-text field searched alone, for the coverage and the explanation (None: not
    searched)."""
    coverage: float | None = None
    """The largest share of the query's words one product holds (shopvec.search.lexical)."""
    explained: dict[str, dict[str, Any]] = dc_field(default_factory=dict)
    """Per product id, the lexical and dense parts of its hybrid score."""


@dataclass
class Plan:
    request: SearchRequest
    scenario: Scenario
    exclude: tuple[str, ...] = ()
    """Products left out of every leg's results, besides any the scenario leaves out."""
    deadline: float | None = None
    """perf_counter time by which the reply must go, from the request's deadline_ms."""
    words: str = ""
    """The words searched: the request's text, with the English senses of its Chinese words
    where the service translates them (shopvec.search.glossary)."""
    translated: str = ""
    """Those senses, where there are any."""
    text: np.ndarray | None = None
    photo: Any = None
    """The query's photo as loaded (a tensor), for its crops (shopvec.search.photo_crops):
    loaded once, not fetched or decoded again."""
    photo_joint: np.ndarray | None = None
    photo_visual: np.ndarray | None = None
    photo_confidence: float | None = None
    like: dict[str, Any] | None = None
    legs: list[Leg] = dc_field(default_factory=list)
    nearest: float | None = None
    """The primary leg's best score as the query itself found it, before any crop's."""
    neighbour_words: dict[str, dict[str, float]] = dc_field(default_factory=dict)
    """Per product id, the visual and words' parts of a photo query's score, where the
    neighbours' words re-ranked it (shopvec.search.neighbour_words)."""
    examples: list[Hit] = dc_field(default_factory=list)
    """A words-to-photos search's examples, the products its words found first, where it
    was searched by example (shopvec.search.photo_examples); empty otherwise."""
    photo_examples: dict[str, float] = dc_field(default_factory=dict)
    """Per product id, its photo's likeness to those examples."""
    error: SearchError | None = None
    truncated: bool = False

    @property
    def field(self) -> VectorField:
        return PRIMARY_FIELD[self.scenario]


def legs_for(plan: Plan, fusion: Fusion, limit: int) -> list[Leg]:
    """The primary leg first; further modalities only when the ranker combines them."""
    request = plan.request
    combine = request.ranker != "fused"
    exclude = plan.exclude
    wanted: list[tuple[VectorField, np.ndarray | None]] = []
    if plan.scenario == "image2image":
        wanted = [("visual_vec", plan.photo_visual)]
        if combine:
            wanted.append(
                ("fused_vec", fusion.query_vector(None, plan.photo_joint, plan.photo_confidence))
            )
    elif plan.scenario == "text2image":
        wanted = [("image_vec", plan.text)]
    elif plan.scenario in ("text2product", "cross"):
        wanted = [
            ("fused_vec", fusion.query_vector(plan.text, plan.photo_joint, plan.photo_confidence))
        ]
        if combine:
            if plan.text is not None:
                wanted += [("text_vec", plan.text), ("image_vec", plan.text)]
            if plan.photo_visual is not None:
                wanted.append(("visual_vec", plan.photo_visual))
    elif plan.scenario == "more_like_this":
        like = plan.like or {}
        exclude = (*exclude, str(like.get("id")))
        wanted = [("fused_vec", np.asarray(like["fused_vec"], np.float32))]
        if combine and like.get("has_image"):
            wanted.append(("visual_vec", np.asarray(like["visual_vec"], np.float32)))
        if combine and like.get("has_text"):
            wanted.append(("text_vec", np.asarray(like["text_vec"], np.float32)))
    return [
        Leg(f, v, limit, filters_from_request(request, f, exclude))
        for f, v in wanted
        if v is not None
    ]


def run_legs(store: ProductStore, legs: Sequence[Leg]) -> None:
    """Searches each leg and sets its hits: one store call per (field, filter, limit), since a
    batch of vectors costs about what one does, so concurrent requests share the call."""
    groups: dict[tuple[Any, ...], list[Leg]] = defaultdict(list)
    for leg in legs:
        key = (
            leg.field,
            leg.lexical,
            repr(leg.ranker),
            repr(leg.filter),
            leg.limit,
            leg.with_vectors,
        )
        groups[key].append(leg)
    for (_, lexical, _, _, limit, with_vectors), group in groups.items():
        vectors = np.stack([leg.vector for leg in group])
        first = group[0]
        if lexical is not None and first.lexical is not None and first.ranker is not None:
            results = store.hybrid_search(
                first.field,
                vectors,
                first.lexical,
                [leg.text for leg in group],
                limit,
                first.ranker,
                first.filter,
            )
        else:
            results = store.search(first.field, vectors, limit, first.filter, with_vectors)
        for leg, hits in zip(group, results, strict=True):
            leg.hits = hits
