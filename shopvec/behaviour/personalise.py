"""Personalised ranking: re-rank a search for a user, or recommend products with no query.

Components, each shown in a result's explanation with the weights from settings:
- query: the search's own score (searches only);
- taste: cosine between the user's taste vector and the product's fused vector;
- cf: item-to-item co-occurrence with the user's recent items, sum over them of
  recency x co-count / users-of-the-item, scaled so the strongest candidate scores 1;
- popularity (recommendations only): decayed recent popularity in the filter's category, else in
  the user's favourite categories, else overall, scaled so the most popular scores 1.
A user with no row (never seen, forgotten, expired) gets the search unchanged, and popularity
alone as recommendations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from shopvec.behaviour.profile import UserProfile
from shopvec.behaviour.pseudonym import Pseudonymiser
from shopvec.behaviour.stores import StatsStore, UserStore
from shopvec.behaviour.taste import decay
from shopvec.behaviour.window import ALL_CATEGORIES
from shopvec.settings import BehaviourSettings
from shopvec.store.base import Hit, ProductStore, SearchFilter

__all__ = ["BlendWeights", "Personaliser", "Ranked"]

_HOUR_MS = 3_600_000
_FAVOURITE_CATEGORIES = 3


@dataclass(frozen=True)
class BlendWeights:
    query: float = 1.0
    taste: float = 0.3
    cf: float = 0.2
    popularity: float = 0.1

    @classmethod
    def from_settings(cls, s: BehaviourSettings) -> BlendWeights:
        return cls(s.weight_query, s.weight_taste, s.weight_cf, s.weight_popularity)


@dataclass(frozen=True)
class Ranked:
    hit: Hit
    score: float
    explanation: dict[str, Any]


class Personaliser:
    def __init__(
        self,
        users: UserStore,
        stats: StatsStore,
        products: ProductStore,
        pseudonyms: Pseudonymiser,
        config: BehaviourSettings,
    ) -> None:
        self._users = users
        self._stats = stats
        self._products = products
        self._pseudonyms = pseudonyms
        self._config = config
        self.weights = BlendWeights.from_settings(config)
        self._half_life_ms = config.half_life_hours * _HOUR_MS

    @property
    def rerank_factor(self) -> int:
        return self._config.rerank_factor

    def profile(self, user_id: str) -> UserProfile | None:
        candidates = self._pseudonyms.candidates(user_id)
        found = self._users.get(candidates)
        for pseudonym in candidates:
            if pseudonym in found:
                c = self._config
                return UserProfile.from_row(found[pseudonym], c.recent_event_ids, c.cf_window)
        return None

    # -- searches ---------------------------------------------------------------------------

    def rerank(self, user_id: str, hits: Sequence[Hit]) -> list[Ranked] | None:
        """The hits re-ordered for the user; None when the user has no profile (keep order)."""
        profile = self.profile(user_id)
        if profile is None or not hits:
            return None
        w = self.weights
        ids = [h.id for h in hits]
        taste = self._taste_scores(profile, ids)
        cf = _scaled(self.cf_scores(profile))
        ranked = []
        for hit in hits:
            t, c = taste.get(hit.id, 0.0), cf.get(hit.id, 0.0)
            score = w.query * hit.score + w.taste * t + w.cf * c
            explanation = {
                "personalised": True,
                "query": hit.score,
                "taste": t,
                "cf": c,
                "weights": {"query": w.query, "taste": w.taste, "cf": w.cf},
            }
            ranked.append(Ranked(hit, score, explanation))
        ranked.sort(key=lambda r: -r.score)
        return ranked

    # -- recommendations --------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        top_k: int,
        flt: SearchFilter | None = None,
        *,
        weights: BlendWeights | None = None,
    ) -> list[Ranked]:
        """Products for the user, their recent items excluded; popularity for a new user."""
        profile = self.profile(user_id)
        return self.recommend_for(profile, top_k, flt, weights=weights)

    def recommend_for(
        self,
        profile: UserProfile | None,
        top_k: int,
        flt: SearchFilter | None = None,
        *,
        weights: BlendWeights | None = None,
    ) -> list[Ranked]:
        w = weights or self.weights
        if profile is None:
            w = BlendWeights(0.0, 0.0, 0.0, 1.0)
        flt = flt or SearchFilter()
        seen = [item for item, _ in profile.window.recency()] if profile else []
        excluded = {*flt.exclude_ids, *seen}
        to_store = replace(flt, exclude_ids=tuple(excluded))
        rest = replace(flt, exclude_ids=())
        pool = max(100, top_k * self._config.rerank_factor)

        taste_vec = profile.taste.unit() if profile else None
        taste: dict[str, float] = {}
        if w.taste > 0 and taste_vec is not None:
            for hit in self._products.search("fused_vec", taste_vec[None, :], pool, to_store)[0]:
                taste[hit.id] = hit.score
        cf = _scaled(self.cf_scores(profile)) if profile is not None and w.cf > 0 else {}
        popularity = _scaled(self.popularity(flt.category, profile)) if w.popularity > 0 else {}

        pooled = dict.fromkeys(taste)
        for scores in (cf, popularity):
            pooled.update(dict.fromkeys(_top(scores, pool, excluded)))
        rows = self._products.get(list(pooled))
        live = [i for i in pooled if i not in excluded and i in rows and rest.matches(rows[i])]
        if w.taste > 0 and taste_vec is not None:
            missing = [i for i in live if i not in taste]
            taste.update(_cosines(taste_vec, {i: rows[i]["fused_vec"] for i in missing}))
        ranked = []
        for item in live:
            t, c, p = taste.get(item, 0.0), cf.get(item, 0.0), popularity.get(item, 0.0)
            score = w.taste * t + w.cf * c + w.popularity * p
            explanation = {
                "personalised": profile is not None,
                "taste": t,
                "cf": c,
                "popularity": p,
                "weights": {"taste": w.taste, "cf": w.cf, "popularity": w.popularity},
            }
            ranked.append(Ranked(Hit(item, score, rows[item]), score, explanation))
        ranked.sort(key=lambda r: (-r.score, r.hit.id))
        return ranked[:top_k]

    # -- components -------------------------------------------------------------------------

    def cf_scores(self, profile: UserProfile) -> dict[str, float]:
        """Unscaled co-occurrence scores of every neighbour of the user's recent items."""
        recent = profile.window.recency()
        if not recent:
            return {}
        newest = recent[0][1]
        totals: dict[str, float] = {}
        neighbours: dict[str, dict[str, float]] = {}
        for row in self._stats.find("i", [item for item, _ in recent]):
            totals[row.name] = totals.get(row.name, 0.0) + row.total
            merged = neighbours.setdefault(row.name, {})
            for other, count in row.counts.items():
                merged[other] = merged.get(other, 0.0) + count
        scores: dict[str, float] = {}
        for item, at_ms in recent:
            users = totals.get(item, 0.0)
            if users <= 0:
                continue
            weight = decay(newest - at_ms, self._half_life_ms) / users
            for other, count in neighbours.get(item, {}).items():
                scores[other] = scores.get(other, 0.0) + weight * count
        return scores

    def popularity(self, category: str | None, profile: UserProfile | None) -> dict[str, float]:
        if category is not None:
            names = [category]
        elif profile is not None and profile.taste.categories:
            prefs = profile.taste.categories
            names = sorted(prefs, key=lambda k: -prefs[k])[:_FAVOURITE_CATEGORIES]
        else:
            names = [ALL_CATEGORIES]
        rows = self._stats.find("c", names)
        newest = max((r.at_ms for r in rows), default=0)
        scores: dict[str, float] = {}
        for row in rows:
            factor = decay(newest - row.at_ms, self._half_life_ms)
            for item, value in row.counts.items():
                scores[item] = scores.get(item, 0.0) + value * factor
        return scores

    def _taste_scores(self, profile: UserProfile, ids: Sequence[str]) -> dict[str, float]:
        taste = profile.taste.unit()
        if taste is None:
            return {}
        vectors = self._products.vectors(ids)
        return _cosines(taste, {i: v["fused_vec"] for i, v in vectors.items()})


def _cosines(taste: np.ndarray, vectors: dict[str, Any]) -> dict[str, float]:
    if not vectors:
        return {}
    ids = list(vectors)
    matrix = np.asarray([vectors[i] for i in ids], dtype=np.float32)
    norms = np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
    return dict(zip(ids, ((matrix @ taste) / norms).tolist(), strict=True))


def _scaled(scores: dict[str, float]) -> dict[str, float]:
    """Divided by the largest score, so that the strongest is 1."""
    top = max(scores.values(), default=0.0)
    if top <= 0:
        return {}
    return {k: v / top for k, v in scores.items()}


def _top(scores: dict[str, float], n: int, excluded: set[str]) -> list[str]:
    ranked = sorted((k for k in scores if k not in excluded), key=lambda k: -scores[k])
    return ranked[:n]
