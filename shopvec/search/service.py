"""Search requests to replies: the requests of one poll are encoded together and their searches
grouped into as few store calls as possible, then each is combined, personalised and shaped.

Which field each scenario searches is in shopvec.search.plan; how legs are combined in
shopvec.search.combine. With a personaliser, a request that carries a user id is re-ranked for
that user (top_k times its rerank factor candidates, see shopvec.behaviour.personalise), and a
user id with no query is a recommendation. Without a user id nothing changes.

A request with words is searched hybrid (vectors and full-text together, see
shopvec.search.lexical) where the retrieval config says so for its scenario, or where the
request asks for it.

A request's deadline_ms counts from when it was sent: past it, the further legs and the
personalisation are skipped and the reply says it was cut short (truncated). A hybrid search's
full-text leg runs first, whatever the deadline: its coverage sets the ranker's weights.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from schemas.product import ProductImage
from schemas.search import SearchError, SearchReply, SearchRequest, SearchResult
from shopvec.encoders.base import Encoder
from shopvec.fusion import Fusion
from shopvec.indexing.pipeline import ImageSource
from shopvec.search.combine import Scored, combine
from shopvec.search.glossary import Glossary
from shopvec.search.lexical import (
    LEXICAL_FIELD,
    RetrievalConfig,
    coverage,
    covered,
    lexical_parts,
)
from shopvec.search.neighbour_words import NeighbourWords
from shopvec.search.photo_crops import PhotoCrops
from shopvec.search.photo_examples import PhotoExamples
from shopvec.search.plan import Leg, Plan, filters_from_request, legs_for, run_legs
from shopvec.store.base import LEXICAL_SOURCES, Hit, HybridRanker, ProductStore
from shopvec.terms import query_terms

if TYPE_CHECKING:
    from shopvec.behaviour.personalise import Personaliser

__all__ = ["SearchService", "filters_from_request", "product_fields"]

log = logging.getLogger(__name__)


def product_fields(row: dict[str, Any]) -> dict[str, Any]:
    """What a reply shows of a product, from its stored row (a missing price is stored as
    a negative number)."""
    doc: dict[str, Any] = row.get("doc") or {}
    price = row.get("price")
    return {
        "title": row.get("title") or "",
        "brand": row.get("brand") or None,
        "category_path": list(doc.get("category_path") or row.get("category") or []),
        "price": price if price is not None and price >= 0 else None,
        "currency": doc.get("currency"),
        "image_url": doc.get("image_url"),
        "thumbnail": doc.get("thumbnail"),
        "version": row.get("version"),
    }


class SearchService:
    def __init__(
        self,
        encoder: Encoder,
        store: ProductStore,
        fusion: Fusion,
        images: ImageSource,
        *,
        max_top_k: int = 100,
        personaliser: Personaliser | None = None,
        retrieval: RetrievalConfig | None = None,
        photo_crops: PhotoCrops | None = None,
        neighbour_words: NeighbourWords | None = None,
        glossary: Glossary | None = None,
        photo_examples: PhotoExamples | None = None,
    ) -> None:
        """photo_crops: also search photo queries as crops of their photo (None: whole).
        neighbour_words: re-rank photo queries by the words of the products they resemble
        (None: by the photo alone). glossary: search a query's Chinese words with their English
        senses too (None: as written). photo_examples: search words to photos by the photos of
        the products the words find (None: by the words' vector)."""
        self._photo_examples = photo_examples
        self._glossary = glossary
        self._photo_crops = photo_crops
        self._neighbour_words = neighbour_words
        self._encoder = encoder
        self._store = store
        self._fusion = fusion
        self._images = images
        self._max_top_k = max_top_k
        self._personaliser = personaliser
        self._retrieval = retrieval or RetrievalConfig()

    def search(self, request: SearchRequest) -> SearchReply:
        return self.search_many([request])[0]

    def search_many(
        self,
        requests: Sequence[SearchRequest],
        ages_ms: Sequence[float] | None = None,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> list[SearchReply]:
        """ages_ms: how long ago each request was sent (its deadline counts from then).
        exclude: products each request must not see, as if they were not stored (the
        evaluation's: a photo query's own product)."""
        started = time.perf_counter()
        ages = ages_ms or [0.0] * len(requests)
        plans = [self._plan(r, started, age) for r, age in zip(requests, ages, strict=True)]
        for plan, left_out in zip(plans, exclude or [()] * len(plans), strict=True):
            plan.exclude = tuple(left_out)
        self._encode([p for p in plans if p.error is None])
        self._load_likes([p for p in plans if p.error is None and p.scenario == "more_like_this"])
        searching = [p for p in plans if p.error is None and p.scenario != "recommend"]
        for p in searching:
            p.legs = legs_for(p, self._fusion, self._fetch_limit(p.request))
            self._make_hybrid(p)
            if self._neighbour_words is not None:
                self._neighbour_words.widen(p)
        self._search_lexical([p for p in searching if p.legs and p.legs[0].lexical])
        if self._photo_examples is not None:
            self._photo_examples.refine(searching, self._store)
        run_legs(self._store, [p.legs[0] for p in searching if p.legs and not p.examples])
        for p in searching:
            if p.legs and p.legs[0].hits:
                p.nearest = p.legs[0].hits[0].score
        if self._photo_crops is not None:
            self._photo_crops.refine(searching, self._encoder, self._store)
        if self._neighbour_words is not None:
            self._neighbour_words.refine(searching, self._store)
        now = time.perf_counter()
        for p in searching:
            late = p.deadline is not None and now > p.deadline
            if late and len(p.legs) > 1:
                p.legs, p.truncated = p.legs[:1], True
        run_legs(self._store, [leg for p in searching for leg in p.legs[1:]])
        for p in searching:
            leg = p.legs[0] if p.legs else None
            if leg is not None and leg.lexical_hits is not None and leg.ranker is not None:
                leg.explained = lexical_parts(leg.hits, leg.lexical_hits, leg.ranker)
        return [self._answer(p, started) for p in plans]

    def _answer(self, plan: Plan, started: float) -> SearchReply:
        """The plan's reply; a failure of its own (not the batch's searches) is its error
        alone, never the other requests' of the batch."""
        try:
            return self._reply(plan, started)
        except Exception as exc:
            log.exception("answering request %s failed", plan.request.request_id)
            error = SearchError(kind="internal", message=f"search failed: {exc}")
            return SearchReply(request_id=plan.request.request_id, error=error)

    def _make_hybrid(self, plan: Plan) -> None:
        request = plan.request
        text = plan.words
        ranker = self._retrieval.ranker(plan.scenario, request.retrieval)
        if (
            not plan.legs
            or not text
            or request.ranker != "fused"
            or ranker is None
            or not self._store.lexical
        ):
            return
        leg = plan.legs[0]
        leg.lexical, leg.text, leg.ranker = LEXICAL_FIELD[plan.scenario], query_terms(text), ranker

    # -- planning and encoding ----------------------------------------------------------------

    def _plan(self, request: SearchRequest, started: float, age_ms: float) -> Plan:
        plan = Plan(request, request.resolved_scenario())
        plan.words = (request.text or "").strip()
        if plan.words and self._glossary is not None:
            translated = self._glossary.translate(plan.words)
            plan.translated = translated[len(plan.words) :].strip()
            plan.words = translated
        if request.deadline_ms is not None:
            plan.deadline = started + (request.deadline_ms - age_ms) / 1000
        scenario = plan.scenario
        has_text = bool(request.text and request.text.strip())
        if scenario in ("text2image", "text2product") and not has_text:
            plan.error = SearchError(kind="invalid_request", message=f"{scenario} needs text")
        elif scenario == "image2image" and not request.has_image:
            plan.error = SearchError(kind="invalid_request", message=f"{scenario} needs an image")
        elif scenario == "cross" and not (has_text or request.has_image):
            plan.error = SearchError(
                kind="invalid_request", message=f"{scenario} needs text, an image, or both"
            )
        elif scenario == "more_like_this" and not request.like_product_id:
            plan.error = SearchError(
                kind="invalid_request", message="more_like_this needs a product id"
            )
        elif scenario == "recommend" and self._personaliser is None:
            plan.error = SearchError(kind="unsupported", message="no recommendations here")
        elif request.top_k + request.offset > self._max_top_k:
            plan.error = SearchError(
                kind="invalid_request", message=f"top_k + offset may not exceed {self._max_top_k}"
            )
        elif plan.deadline is not None and plan.deadline <= started:
            plan.error = SearchError(
                kind="timeout", message=f"the deadline of {request.deadline_ms} ms had passed"
            )
        return plan

    def _fetch_limit(self, request: SearchRequest) -> int:
        limit = request.top_k + request.offset
        if request.user_id is not None and self._personaliser is not None:
            return limit * self._personaliser.rerank_factor
        return limit

    def _encode(self, plans: list[Plan]) -> None:
        texted = [p for p in plans if p.words]
        if texted:
            vectors = self._encoder.encode_texts([p.words for p in texted])
            for p, v in zip(texted, vectors, strict=True):
                p.text = v
        pictured = [p for p in plans if p.request.has_image]
        if not pictured:
            return
        sources = [
            ProductImage(url=p.request.image_url)
            if p.request.image_url
            else ProductImage(data_base64=p.request.image_base64)
            for p in pictured
        ]
        ok: list[tuple[Plan, torch.Tensor]] = []
        for p, got in zip(pictured, self._images.load_many(sources), strict=True):
            if isinstance(got, Exception):
                p.error = SearchError(kind="invalid_request", message=f"query image: {got}")
            else:
                ok.append((p, got))
        if ok:
            vecs = self._encoder.encode_images([t for _, t in ok])
            for i, (p, photo) in enumerate(ok):
                p.photo = photo
                p.photo_joint = vecs.joint[i]
                p.photo_visual = vecs.visual[i]
                if vecs.confidence is not None:
                    p.photo_confidence = float(vecs.confidence[i])

    def _load_likes(self, plans: list[Plan]) -> None:
        if not plans:
            return
        found = self._store.get([p.request.like_product_id or "" for p in plans])
        for p in plans:
            p.like = found.get(p.request.like_product_id or "")
            if p.like is None:
                p.error = SearchError(
                    kind="invalid_request",
                    message=f"no product {p.request.like_product_id!r} to find more like",
                )

    def _search_lexical(self, plans: list[Plan]) -> None:
        """The full-text legs of hybrid searches alone, before the hybrid searches: each
        query's coverage sets its ranker's weights, and the hits explain the lexical part of
        each score (shopvec.search.lexical)."""
        groups: dict[tuple[str, str, int], list[Plan]] = defaultdict(list)
        for p in plans:
            leg = p.legs[0]
            groups[(str(leg.lexical), repr(leg.filter), leg.limit)].append(p)
        for group in groups.values():
            first = group[0].legs[0]
            assert first.lexical is not None
            results = self._store.lexical_search(
                first.lexical, [p.legs[0].text for p in group], first.limit, first.filter
            )
            for p, hits in zip(group, results, strict=True):
                leg = p.legs[0]
                assert leg.ranker is not None and leg.lexical is not None
                leg.lexical_hits = hits
                leg.coverage = coverage(p.words, hits, LEXICAL_SOURCES[leg.lexical])
                leg.ranker = covered(leg.ranker, leg.coverage)

    # -- replies --------------------------------------------------------------------------------

    def _fusion_explained(self, photo_confidence: float | None) -> dict[str, Any]:
        """How this product's fused vector mixed its photo and its words."""
        out: dict[str, Any] = {
            "method": self._fusion.method,
            "image_weight": self._fusion.image_weight,
        }
        if photo_confidence is not None:
            out["photo_confidence"] = photo_confidence
            out["photo_weight_applied"] = round(self._fusion.photo_weight(photo_confidence), 4)
        return out

    def _hybrid_explained(self, leg: Leg, product_id: str) -> dict[str, Any]:
        ranker = leg.ranker or HybridRanker()
        out: dict[str, Any] = {
            "ranker": ranker.kind,
            "lexical_field": leg.lexical,
            "coverage": None if leg.coverage is None else round(leg.coverage, 4),
        }
        if ranker.kind == "rrf":
            out["k"] = ranker.k
        else:
            out["lexical_weight"] = ranker.lexical_weight
        out.update(leg.explained.get(product_id, {}))
        return out

    def _reply(self, plan: Plan, started: float) -> SearchReply:
        request = plan.request
        took = lambda: (time.perf_counter() - started) * 1000  # noqa: E731
        if plan.error is not None:
            return SearchReply(request_id=request.request_id, error=plan.error, took_ms=took())
        limit = request.top_k + request.offset
        personal: dict[str, dict[str, Any]] = {}
        info: dict[str, Any] = {}
        if plan.scenario == "recommend":
            assert self._personaliser is not None and request.user_id is not None
            ranked = self._personaliser.recommend(
                request.user_id, limit, filters_from_request(request, plan.field)
            )
            scored = [Scored(r.hit, r.score) for r in ranked]
            personal = {r.hit.id: r.explanation for r in ranked}
        else:
            scored, info = combine(plan.legs, request.ranker, self._fusion)
            if request.user_id is not None and self._personaliser is not None:
                if plan.deadline is not None and time.perf_counter() > plan.deadline:
                    plan.truncated = True
                else:
                    by_id = {s.hit.id: s for s in scored}
                    # A ranker's merged score (RRF: about 1/60) is on no similarity's scale:
                    # divided by the best one, the personaliser weighs it as it does cf.
                    hybrid = bool(plan.legs and plan.legs[0].lexical)
                    top = max((s.score for s in scored), default=0.0) if hybrid else 0.0
                    scale = 1.0 / top if top > 0 else 1.0
                    hits = [Hit(s.hit.id, s.score * scale, s.hit.fields) for s in scored]
                    reranked = self._personaliser.rerank(request.user_id, hits)
                    if reranked is not None:
                        scored = [Scored(r.hit, r.score, by_id[r.hit.id].scores) for r in reranked]
                        personal = {r.hit.id: r.explanation for r in reranked}
        results = [
            self._result(s, rank, plan, info, personal.get(s.hit.id, {}))
            for rank, s in enumerate(scored[request.offset : limit], start=request.offset + 1)
        ]
        return SearchReply(
            request_id=request.request_id,
            scenario=plan.scenario,
            results=results,
            took_ms=took(),
            truncated=plan.truncated,
        )

    def _result(
        self,
        scored: Scored,
        rank: int,
        plan: Plan,
        combined: dict[str, Any],
        personal: dict[str, Any],
    ) -> SearchResult:
        f = scored.hit.fields
        doc: dict[str, Any] = f.get("doc") or {}
        explanation: dict[str, Any] = {"field": plan.field, "scores": scored.scores, **personal}
        primary = plan.legs[0] if plan.legs else None
        if primary is not None and primary.lexical is not None:
            explanation["hybrid"] = self._hybrid_explained(primary, scored.hit.id)
        if scored.hit.id in plan.neighbour_words:
            assert self._neighbour_words is not None
            explanation["neighbour_words"] = {
                **plan.neighbour_words[scored.hit.id],
                "weight": self._neighbour_words.weight,
                "neighbours": self._neighbour_words.neighbours,
            }
        if scored.hit.id in plan.photo_examples:
            assert self._photo_examples is not None
            explanation["photo_examples"] = {
                "likeness": plan.photo_examples[scored.hit.id],
                "examples": [e.id for e in plan.examples[: self._photo_examples.examples]],
            }
        if doc.get("colour_words"):
            explanation["colours"] = doc["colour_words"]
        if plan.translated:
            explanation["translated_words"] = plan.translated
        if plan.request.explain:
            filters = plan.request.filters
            explanation.update(
                {
                    "scenario": plan.scenario,
                    "ranker": plan.request.ranker,
                    "fusion": self._fusion_explained(doc.get("photo_confidence")),
                    "combined": combined,
                    "filters_matched": filters.model_dump(exclude_defaults=True) if filters else {},
                    "personalisation": personal,
                }
            )
        return SearchResult(
            product_id=scored.hit.id,
            score=scored.score,
            rank=rank,
            explanation=explanation,
            **product_fields(f),
        )
