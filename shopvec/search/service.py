"""Search requests to replies: encode the queries of a batch together, search, shape results.

Which field a scenario searches:
- image2image: visual_vec with the photo's visual vector (products with a photo);
- text2image: image_vec with the words' joint vector (products with a photo, whatever their
  titles say);
- text2product and cross: fused_vec with the fused query (words, photo, or both).

With a personaliser, a request that carries a user id is re-ranked for that user (top_k times
its rerank factor candidates, see shopvec.behaviour.personalise), and a user id with no query is
a recommendation. Without a user id nothing changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from schemas.product import ProductImage
from schemas.search import Scenario, SearchError, SearchReply, SearchRequest, SearchResult
from shopvec.encoders.base import Encoder
from shopvec.fusion import Fusion
from shopvec.indexing.pipeline import ImageSource
from shopvec.store.base import Hit, ProductStore, SearchFilter, VectorField

if TYPE_CHECKING:
    from shopvec.behaviour.personalise import Personaliser, Ranked

__all__ = ["SearchService", "filters_from_request"]

log = logging.getLogger(__name__)


def filters_from_request(request: SearchRequest, field: VectorField) -> SearchFilter:
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
    )


_SCENARIO_FIELD: dict[str, VectorField] = {
    "image2image": "visual_vec",
    "text2image": "image_vec",
    "text2product": "fused_vec",
    "cross": "fused_vec",
    "recommend": "fused_vec",
}


@dataclass
class _Plan:
    request: SearchRequest
    scenario: Scenario
    field: VectorField
    text: np.ndarray | None = None
    photo_joint: np.ndarray | None = None
    photo_visual: np.ndarray | None = None
    error: SearchError | None = None


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
    ) -> None:
        self._encoder = encoder
        self._store = store
        self._fusion = fusion
        self._images = images
        self._max_top_k = max_top_k
        self._personaliser = personaliser

    def search_many(self, requests: Sequence[SearchRequest]) -> list[SearchReply]:
        started = time.perf_counter()
        plans = [self._plan(r) for r in requests]
        self._encode(plans)
        replies = []
        for plan in plans:
            if plan.error is not None:
                replies.append(
                    SearchReply(
                        request_id=plan.request.request_id,
                        error=plan.error,
                        took_ms=(time.perf_counter() - started) * 1000,
                    )
                )
                continue
            replies.append(self._search(plan, started))
        return replies

    def search(self, request: SearchRequest) -> SearchReply:
        return self.search_many([request])[0]

    def _plan(self, request: SearchRequest) -> _Plan:
        scenario = request.resolved_scenario()
        field = _SCENARIO_FIELD[scenario]
        plan = _Plan(request, scenario, field)
        needs_text = scenario in ("text2image", "text2product")
        needs_image = scenario == "image2image"
        if needs_text and not (request.text and request.text.strip()):
            plan.error = SearchError(kind="invalid_request", message=f"{scenario} needs text")
        elif needs_image and not request.has_image:
            plan.error = SearchError(kind="invalid_request", message=f"{scenario} needs an image")
        elif scenario == "recommend" and self._personaliser is None:
            plan.error = SearchError(kind="unsupported", message="no recommendations here")
        elif request.top_k + request.offset > self._max_top_k:
            plan.error = SearchError(
                kind="invalid_request",
                message=f"top_k + offset may not exceed {self._max_top_k}",
            )
        return plan

    def _encode(self, plans: list[_Plan]) -> None:
        live = [p for p in plans if p.error is None]
        texted = [p for p in live if p.request.text and p.request.text.strip()]
        if texted:
            vectors = self._encoder.encode_texts([p.request.text or "" for p in texted])
            for p, v in zip(texted, vectors, strict=True):
                p.text = v
        pictured = [p for p in live if p.request.has_image]
        if not pictured:
            return
        sources = []
        for p in pictured:
            r = p.request
            if r.image_url:
                sources.append(ProductImage(url=r.image_url))
            else:
                sources.append(ProductImage(data_base64=r.image_base64))
        loaded = self._images.load_many(sources)
        ok: list[tuple[_Plan, torch.Tensor]] = []
        for p, got in zip(pictured, loaded, strict=True):
            if isinstance(got, Exception):
                p.error = SearchError(kind="invalid_request", message=f"query image: {got}")
            else:
                ok.append((p, got))
        if ok:
            vecs = self._encoder.encode_images([t for _, t in ok])
            for i, (p, _) in enumerate(ok):
                p.photo_joint = vecs.joint[i]
                p.photo_visual = vecs.visual[i]

    def _search(self, plan: _Plan, started: float) -> SearchReply:
        request = plan.request
        if plan.scenario == "recommend":
            return self._recommend(plan, started)
        if plan.field == "visual_vec":
            query = plan.photo_visual
        elif plan.field == "image_vec":
            query = plan.text
        else:
            query = self._fusion.query_vector(plan.text, plan.photo_joint)
        assert query is not None
        limit = request.top_k + request.offset
        user = request.user_id
        personaliser = self._personaliser if user is not None else None
        fetch = limit * personaliser.rerank_factor if personaliser is not None else limit
        hits = self._store.search(
            plan.field, query[None, :], fetch, filters_from_request(request, plan.field)
        )[0]
        if personaliser is not None and user is not None:
            ranked = personaliser.rerank(user, hits)
            if ranked is not None:
                return self._reply(plan, ranked[:limit], started)
        results = [
            _result(hit, rank, plan, request.explain)
            for rank, hit in enumerate(hits[request.offset : limit], start=request.offset + 1)
        ]
        return SearchReply(
            request_id=request.request_id,
            scenario=plan.scenario,
            results=results,
            took_ms=(time.perf_counter() - started) * 1000,
        )

    # -- personalised (see shopvec.behaviour) --------------------------------------------------

    def _recommend(self, plan: _Plan, started: float) -> SearchReply:
        request = plan.request
        assert self._personaliser is not None and request.user_id is not None
        ranked = self._personaliser.recommend(
            request.user_id,
            request.top_k + request.offset,
            filters_from_request(request, plan.field),
        )
        return self._reply(plan, ranked, started)

    def _reply(self, plan: _Plan, ranked: Sequence[Ranked], started: float) -> SearchReply:
        request = plan.request
        results = []
        for rank, r in enumerate(ranked[request.offset :], start=request.offset + 1):
            plain = _result(r.hit, rank, plan, request.explain)
            explanation = {**(plain.explanation or {}), **r.explanation}
            results.append(plain.model_copy(update={"score": r.score, "explanation": explanation}))
        return SearchReply(
            request_id=request.request_id,
            scenario=plan.scenario,
            results=results,
            took_ms=(time.perf_counter() - started) * 1000,
        )


def _result(hit: Hit, rank: int, plan: _Plan, full: bool) -> SearchResult:
    f = hit.fields
    doc: dict[str, Any] = f.get("doc") or {}
    explanation: dict[str, Any] = {"field": plan.field, "scores": {plan.field: hit.score}}
    if full:
        explanation["scenario"] = plan.scenario
    price = f.get("price")
    return SearchResult(
        product_id=hit.id,
        score=hit.score,
        rank=rank,
        title=f.get("title", ""),
        brand=f.get("brand") or None,
        category_path=list(doc.get("category_path") or f.get("category") or []),
        price=price if price is not None and price >= 0 else None,
        currency=doc.get("currency"),
        image_url=doc.get("image_url"),
        version=f.get("version"),
        explanation=explanation,
    )
