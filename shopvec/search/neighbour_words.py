"""Photo queries re-ranked by the words of the products they resemble.

A photo's visual vector finds products that look alike: the same colours, the same outline,
and with them products of other kinds (a black kurta among black shirts). The titles of its
nearest products say, by majority, what kind of product the photo shows. So a photo query
(``image2image``) fetches ``depth`` candidates by its visual vector, takes the mean of the
words' vectors of the ``neighbours`` nearest of them, and scores each candidate by

    visual similarity + weight x similarity of the candidate's words' vector to that mean

(pseudo-relevance feedback across modalities: the photo asks, the catalogue's own words
answer). A candidate without words counts the lowest words' part of the candidates, as a
combined search counts a leg's lowest score for a product it did not return. Both similarities
are the collection's metric (``shopvec.similarity``), so the sum ranks alike under cosine and
Euclidean.

The feedback is only as good as the neighbours, so it is asked only of a photo whose nearest
candidate is close (``min_similarity``, a cosine): a catalogue-like photo, whose neighbours are
products of its kind. A shopper's photo of one product on a cluttered background is far from
everything, its neighbours say little about its kind, and the words' parts, which differ more
between products of one kind than their small visual margins do, would push the product itself
down; such a photo keeps the order of its photo alone. So does a product's own catalogue
photo (``max_similarity``: a cosine of 0.99 or more, the photo as the catalogue holds it): its
product comes first by its photo, and its words must not move it. (A re-compressed or shrunk
copy of a catalogue photo lies farther from it in this encoder's vectors, a median cosine of
0.85 to 0.94, among the product's neighbours, and is re-ranked like any catalogue photo.) The
photo as sent is judged, not its crops (``shopvec.search.photo_crops``): a crop that happens to
come near a product does not make a shopper's photo a catalogue one.

The words' vectors come back with the search's hits (``with_vectors``; read apart only for a
hit without them). It costs a deeper search per photo query, nothing at indexing. The setting
(10 neighbours, weight 1, 100 candidates, nearest at cosine 0.7 or more) was chosen on the
development data for the offline encoder (docs/evaluation.md, "Photo to photo: the neighbours'
words"); another encoder's similarities lie on another scale, and its ``min_similarity`` is
measured the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shopvec.search.plan import Plan
from shopvec.similarity import Metric, score_from_cosine, similarity
from shopvec.store.base import Hit, ProductStore

__all__ = ["NeighbourWords", "rescore"]


def rescore(
    hits: Sequence[Hit],
    words: dict[str, np.ndarray],
    neighbours: int,
    weight: float,
    metric: Metric,
) -> tuple[list[Hit], dict[str, dict[str, float]]]:
    """hits: best first, by visual similarity; words: the words' vector of each hit that has
    words. The hits re-ranked, and per product its visual and words' parts."""
    near = [words[h.id] for h in hits[:neighbours] if h.id in words]
    if not near:
        return list(hits), {}
    centre = np.mean(np.stack(near), axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    have = [h.id for h in hits if h.id in words]
    sims = similarity(centre, np.stack([words[i] for i in have]), metric)
    by_id = {i: float(s) for i, s in zip(have, sims, strict=True)}
    floor = min(by_id.values())
    parts: dict[str, dict[str, float]] = {}
    out = []
    for h in hits:
        part = by_id.get(h.id)
        parts[h.id] = {"visual": h.score} if part is None else {"visual": h.score, "words": part}
        out.append(Hit(h.id, h.score + weight * (floor if part is None else part), h.fields))
    out.sort(key=lambda h: (-h.score, h.id))
    return out, parts


@dataclass(frozen=True)
class NeighbourWords:
    neighbours: int = 10
    weight: float = 1.0
    depth: int = 100
    min_similarity: float = 0.7
    max_similarity: float = 0.99

    def trusts(self, nearest: float | None, metric: Metric) -> bool:
        """Whether the photo's nearest product (its score, under the metric) is close enough
        for the neighbours' words to be asked, at ``min_similarity`` (a cosine of unit vectors)
        or closer, and not the photo's own product: at ``max_similarity`` or closer the photo
        is that product's photo, and its order by the photo alone puts it first."""
        return nearest is not None and score_from_cosine(
            self.min_similarity, metric
        ) <= nearest < score_from_cosine(self.max_similarity, metric)

    def wants(self, plan: Plan) -> bool:
        """Whether this plan's search is re-ranked: a photo query searching the visual field
        alone (the fused ranker)."""
        return plan.scenario == "image2image" and plan.request.ranker == "fused"

    def widen(self, plan: Plan) -> None:
        """Has the primary leg of a plan it wants fetch ``depth`` candidates, with their words'
        vectors."""
        if self.wants(plan) and plan.legs:
            leg = plan.legs[0]
            leg.limit = max(leg.limit, self.depth)
            leg.with_vectors = ("text_vec",)

    def refine(self, plans: Sequence[Plan], store: ProductStore) -> None:
        """Re-ranks the primary leg of each photo query it wants and whose photo's nearest
        product it trusts (``Plan.nearest``: the whole photo's, not a crop's). A store read
        only for hits that came back without their words' vectors."""
        todo = [
            p
            for p in plans
            if self.wants(p)
            and p.error is None
            and p.legs
            and p.legs[0].field == "visual_vec"
            and p.legs[0].hits
            and self.trusts(p.nearest, store.spec.metric)
        ]
        if not todo:
            return
        words: dict[str, np.ndarray] = {}
        missing: set[str] = set()
        for p in todo:
            for h in p.legs[0].hits:
                if not h.fields.get("has_text"):
                    continue
                if h.fields.get("text_vec") is not None:
                    words[h.id] = np.asarray(h.fields["text_vec"], np.float32)
                else:
                    missing.add(h.id)
        unread = sorted(missing - words.keys())
        if unread:
            found = store.vectors(unread, fields=("text_vec",))
            words.update({i: v["text_vec"] for i, v in found.items()})
        for p in todo:
            leg = p.legs[0]
            leg.hits, p.neighbour_words = rescore(
                leg.hits, words, self.neighbours, self.weight, store.spec.metric
            )
