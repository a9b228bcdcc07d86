"""Next-item prediction on a real interaction log, replayed in time order through the engine.

Protocol (online leave-last-out): the log is replayed in time order through `BehaviourEngine`,
in batches, on the in-memory stores. When a user's second-to-last interaction comes up, each
method ranks products for that user as things stand at that moment (validation: it is then
applied); at the user's last interaction the same again (test: it is held out, never applied).
Nothing later than the moment of the prediction is known to it. Products the user already had
are excluded. Methods, all through `Personaliser.recommend_for`:

- popularity: recent popularity over everything (what a user with no history gets);
- item-item CF: co-occurrence with the user's recent items only;
- taste vector: cosine with the user's taste vector only;
- blend: taste, CF and popularity in the user's favourite categories, with given weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas.user_event import EventType, UserEvent
from shopvec.behaviour import (
    BehaviourEngine,
    BlendWeights,
    InMemoryStatsStore,
    InMemoryUserStore,
    Personaliser,
    Pseudonymiser,
)
from shopvec.behaviour.engine import Inbound
from shopvec.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from shopvec.settings import BehaviourSettings
from shopvec.similarity import similarity
from shopvec.store.base import Hit, SearchFilter, VectorField

__all__ = [
    "METHODS",
    "Interaction",
    "NextItemResult",
    "VectorCatalogue",
    "evaluate_next_item",
]

K = 10


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    type: EventType
    timestamp: int
    """Unix seconds."""


METHODS: dict[str, Callable[[BlendWeights], BlendWeights | None]] = {
    "popularity": lambda w: None,
    "item-item CF": lambda w: BlendWeights(0.0, 0.0, 1.0, 0.0),
    "taste vector": lambda w: BlendWeights(0.0, 1.0, 0.0, 0.0),
    "blend": lambda w: w,
}
"""Method name -> the weights it ranks with, given the blend's; None: as a user with no history."""


class VectorCatalogue:
    """A read-only ProductStore over a matrix of fused vectors: exact search, the exclusions as
    a set (the evaluation excludes hundreds of products per query)."""

    def __init__(self, ids: Sequence[str], fused: np.ndarray, categories: Mapping[str, list[str]]):
        self._ids = list(ids)
        self._matrix = np.asarray(fused, dtype=np.float32)
        self._index = {pid: i for i, pid in enumerate(self._ids)}
        self._rows = {
            pid: {
                "id": pid,
                "deleted": False,
                "category": list(categories.get(pid, [])),
                "brand": "",
                "price": -1.0,
                "in_stock": True,
                "has_image": False,
                "has_text": True,
                "doc": {},
                "fused_vec": self._matrix[i],
            }
            for i, pid in enumerate(self._ids)
        }

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: self._rows[i] for i in ids if i in self._rows}

    def vectors(self, ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        return {i: {"fused_vec": self._rows[i]["fused_vec"]} for i in ids if i in self._rows}

    def search(
        self,
        field: VectorField,
        vectors: np.ndarray,
        limit: int,
        flt: SearchFilter | None = None,
        with_vectors: Sequence[VectorField] = (),
    ) -> list[list[Hit]]:
        excluded = {self._index[i] for i in (flt.exclude_ids if flt else ()) if i in self._index}
        out = []
        for query in np.atleast_2d(vectors):
            scores = similarity(query, self._matrix, "COSINE")
            if excluded:
                scores[list(excluded)] = -np.inf
            top = np.argsort(-scores, kind="stable")[:limit]
            out.append([Hit(self._ids[i], float(scores[i]), self._rows[self._ids[i]]) for i in top])
        return out


@dataclass
class NextItemResult:
    test: dict[str, dict[str, float]]
    validation: dict[str, dict[str, float]]
    users: int
    interactions: int
    replay_seconds: float
    events_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)


def _scores(ranking: list[str], target: str) -> dict[str, float]:
    return {
        f"R@{K}": recall_at_k(ranking, {target}, K),
        f"MRR@{K}": mrr_at_k(ranking, {target}, K),
        f"nDCG@{K}": ndcg_at_k(ranking, {target: 1}, K),
    }


def evaluate_next_item(
    interactions: Sequence[Interaction],
    catalogue: VectorCatalogue,
    config: BehaviourSettings,
    *,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> NextItemResult:
    users, stats = InMemoryUserStore(), InMemoryStatsStore(copy_rows=False)
    pseudonyms = Pseudonymiser(config.pseudonym_key)
    engine = BehaviourEngine(users, stats, catalogue, pseudonyms, config)  # type: ignore[arg-type]
    personaliser = Personaliser(users, stats, catalogue, pseudonyms, config)  # type: ignore[arg-type]
    blend = BlendWeights.from_settings(config)

    ordered = sorted(range(len(interactions)), key=lambda i: (interactions[i].timestamp, i))
    last: dict[str, int] = {}
    second: dict[str, int] = {}
    for i in ordered:
        u = interactions[i].user
        if u in last:
            second[u] = last[u]
        last[u] = i
    held_out = {i: u for u, i in last.items() if u in second}
    validated = {i: u for u, i in second.items()}

    seen: dict[str, set[str]] = {}
    sums: dict[str, dict[str, dict[str, float]]] = {"test": {}, "validation": {}}
    pending: list[Inbound] = []
    replay_s = 0.0
    applied = 0

    def flush() -> None:
        nonlocal replay_s, applied
        if pending:
            started = time.perf_counter()
            engine.apply(pending)
            replay_s += time.perf_counter() - started
            applied += len(pending)
            pending.clear()

    def predict(split: str, user: str, target: str) -> None:
        flush()
        profile = personaliser.profile(user)
        flt = SearchFilter(exclude_ids=tuple(seen.get(user, ())))
        for method, weights_of in METHODS.items():
            weights = weights_of(blend)
            ranked = personaliser.recommend_for(
                profile if weights is not None else None, K, flt, weights=weights
            )
            scores = _scores([r.hit.id for r in ranked], target)
            into = sums[split].setdefault(method, {})
            for name, value in scores.items():
                into[name] = into.get(name, 0.0) + value

    for n, i in enumerate(ordered):
        x = interactions[i]
        if i in validated or i in held_out:
            predict("validation" if i in validated else "test", x.user, x.item)
        if i in held_out:
            continue
        seen.setdefault(x.user, set()).add(x.item)
        event = UserEvent(
            event_id=f"{x.user}:{x.item}:{x.timestamp}",
            user_id=x.user,
            product_id=x.item,
            type=x.type,
            timestamp=datetime.fromtimestamp(x.timestamp, UTC),
        )
        pending.append(Inbound(event, 0, n))
        if len(pending) >= batch_size:
            flush()
        if progress is not None and n % 5000 == 0:
            progress(n, len(ordered))
    flush()

    def means(split: str, count: int) -> dict[str, dict[str, float]]:
        return {
            m: {name: value / max(count, 1) for name, value in values.items()}
            for m, values in sums[split].items()
        }

    return NextItemResult(
        test=means("test", len(held_out)),
        validation=means("validation", len(validated)),
        users=len(held_out),
        interactions=len(interactions),
        replay_seconds=replay_s,
        events_per_second=applied / replay_s if replay_s else 0.0,
    )
