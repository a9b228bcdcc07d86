"""Words to photos by example: the photos that look like the products the words find.

A words query reaches a photo only through the photo's vector in the words' space, and the
offline encoder's (ConSE: the names of the photo's likeliest ImageNet classes) says nothing of
colour and little of fashion kinds. The catalogue's products that have words bridge the gap:
the ``examples`` products whose words' vectors (``text_vec``) are nearest the query's, among
those with a photo, are the query's examples, and each photo is scored by its own visual vector
against theirs:

    likeness(photo) = mean cosine of its visual vector to the examples' visual vectors,
                      the photo's own product left out of its examples

so a photo's own words never count toward its own score: the scenario still finds a photo by
what it shows (a product with no words, or one whose words do not match, is found by looking
like the products whose words do), pseudo-relevance feedback across modalities in the other
direction from shopvec.search.neighbour_words. The photos are fetched by the examples' mean
visual vector (the visual field's index), scored exactly, and ranked by their likeness; where
the search is hybrid, that ranking takes the place of the words' vector leg and is merged with
the full-text leg (the photos' colour words) as the scenario's ranker merges them: RRF, sum of
1 / (k + rank); weighted, the likeness mapped to 0..1 as Milvus maps a cosine, plus the words'
part. With fewer than two examples (a catalogue without words) the search is left as it was.

It costs two vector searches per words-to-photos query (the examples with their visual vectors,
then the photos) in place of one, and nothing at indexing. Ten examples, as the photo queries'
ten neighbours, not tuned (docs/evaluation.md, "Words to photos by example").
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shopvec.search.plan import Leg, Plan, run_legs
from shopvec.store.base import Hit, HybridRanker, ProductStore

__all__ = ["PhotoExamples", "likeness", "merge"]


def likeness(candidates: Sequence[Hit], examples: Sequence[Hit], n: int) -> list[tuple[Hit, float]]:
    """Each candidate (a hit carrying its ``visual_vec``) with the mean cosine of its visual
    vector to the first ``n`` examples other than itself, best first; the visual vectors are
    unit length. A candidate without a vector, or with no example but itself, is left out."""
    vectors = {e.id: np.asarray(e.fields["visual_vec"], np.float32) for e in examples}
    order = [e.id for e in examples]
    total = np.sum([vectors[i] for i in order[:n]], axis=0)
    spare = vectors[order[n]] if len(order) > n else None
    out = []
    for hit in candidates:
        raw = hit.fields.get("visual_vec")
        if raw is None:
            continue
        v = np.asarray(raw, np.float32)
        if hit.id not in order[:n]:
            others, count = total, min(n, len(order))
        elif spare is not None:
            others, count = total - vectors[hit.id] + spare, n
        else:
            others, count = total - vectors[hit.id], len(order) - 1
        if count:
            out.append((hit, float(v @ others) / count))
    out.sort(key=lambda pair: (-pair[1], pair[0].id))
    return out


def merge(
    ranked: Sequence[tuple[Hit, float]],
    lexical_hits: Sequence[Hit] | None,
    ranker: HybridRanker | None,
    limit: int,
) -> list[Hit]:
    """The photos' ranking by likeness merged with the full-text leg's hits as ``ranker``
    merges a hybrid search's legs (None: the likeness alone); ``limit`` best."""
    if lexical_hits is None or ranker is None:
        return [Hit(h.id, s, h.fields) for h, s in ranked[:limit]]
    fields = {h.id: h.fields for h in lexical_hits}
    fields.update({h.id: h.fields for h, _ in ranked})
    score: dict[str, float] = defaultdict(float)
    if ranker.kind == "rrf":
        for rank, (h, _) in enumerate(ranked, start=1):
            score[h.id] += 1.0 / (ranker.k + rank)
        for rank, h in enumerate(lexical_hits, start=1):
            score[h.id] += 1.0 / (ranker.k + rank)
    else:
        w = ranker.lexical_weight
        for h, s in ranked:
            score[h.id] += (1.0 - w) * (1.0 + s) / 2.0
        for h in lexical_hits:
            score[h.id] += w * 2.0 * float(np.arctan(h.score)) / np.pi
    best = sorted(score, key=lambda i: (-score[i], i))[:limit]
    return [Hit(i, score[i], fields[i]) for i in best]


@dataclass(frozen=True)
class PhotoExamples:
    examples: int = 10

    def wants(self, plan: Plan) -> bool:
        """A words-to-photos search on the photos' field (the fused ranker), whose words were
        encoded."""
        return (
            plan.scenario == "text2image"
            and plan.request.ranker == "fused"
            and plan.error is None
            and plan.text is not None
            and bool(plan.legs)
            and plan.legs[0].field == "image_vec"
        )

    def refine(self, plans: Sequence[Plan], store: ProductStore) -> None:
        """Searches each plan it wants by example: sets its primary leg's hits and the plan's
        ``photo_examples`` (the examples' ids and each photo's likeness). A plan with fewer
        than two examples is left for its own search."""
        todo = [p for p in plans if self.wants(p)]
        if not todo or self.examples < 1:
            return
        asked = {
            id(p): Leg(
                "text_vec",
                np.asarray(p.text, np.float32),
                self.examples + 1,
                dataclasses.replace(p.legs[0].filter, require_text=True, require_image=True),
                with_vectors=("visual_vec",),
            )
            for p in todo
        }
        run_legs(store, list(asked.values()))
        ready: list[Plan] = []
        photos: dict[int, Leg] = {}
        for p in todo:
            examples = [h for h in asked[id(p)].hits if h.fields.get("visual_vec") is not None]
            if len(examples) < 2:
                continue
            centre = np.sum(
                [np.asarray(e.fields["visual_vec"], np.float32) for e in examples[: self.examples]],
                axis=0,
            )
            leg = p.legs[0]
            photos[id(p)] = Leg(
                "visual_vec",
                centre / max(float(np.linalg.norm(centre)), 1e-12),
                leg.limit,
                leg.filter,
                with_vectors=("visual_vec",),
            )
            p.examples = examples
            ready.append(p)
        run_legs(store, list(photos.values()))
        for p in ready:
            leg = p.legs[0]
            found = photos[id(p)].hits
            seen = {h.id for h in found}
            candidates = [*found, *(e for e in p.examples if e.id not in seen)]
            ranked = likeness(candidates, p.examples, self.examples)[: leg.limit]
            p.photo_examples = {h.id: round(s, 6) for h, s in ranked}
            leg.hits = merge(ranked, leg.lexical_hits, leg.ranker, leg.limit)
