"""Products, events and an engine on in-memory stores, shared by the behaviour unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from schemas.user_event import ForgetUser, UserEvent
from shopvec.behaviour import (
    BehaviourEngine,
    InMemoryStatsStore,
    InMemoryUserStore,
    Personaliser,
    Pseudonymiser,
    decay,
)
from shopvec.behaviour.engine import Inbound
from shopvec.encoders.base import EncoderInfo
from shopvec.settings import BehaviourSettings
from shopvec.store import CollectionSpec, InMemoryProductStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIM = 8


def product_row(pid: str, vector: np.ndarray, category: list[str], brand: str = "") -> dict:
    v = (vector / np.linalg.norm(vector)).astype(np.float32)
    return {
        "id": pid,
        "version": 1,
        "deleted": False,
        "title": pid,
        "brand": brand,
        "price": 10.0,
        "in_stock": True,
        "category": category,
        "has_image": False,
        "has_text": True,
        "event_ms": 0,
        "doc": {"category_path": category},
        "text_hash": "",
        "image_hash": "",
        "visual_vec": np.zeros(4, np.float32),
        "image_vec": v,
        "text_vec": v,
        "fused_vec": v,
    }


def catalogue() -> InMemoryProductStore:
    """Two clusters: shoes (near e0) and hats (near e1), five of each."""
    spec = CollectionSpec("products", EncoderInfo("fake", "1", DIM, 4), "weighted50", DIM, "COSINE")
    store = InMemoryProductStore(spec)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        noise = rng.normal(0, 0.15, DIM)
        rows.append(product_row(f"shoe-{i}", np.eye(DIM)[0] + noise, ["Footwear", "Shoes"], "A"))
        noise = rng.normal(0, 0.15, DIM)
        rows.append(product_row(f"hat-{i}", np.eye(DIM)[1] + noise, ["Accessories", "Hats"], "B"))
    store.upsert(rows)
    return store


def config(**changes: Any) -> BehaviourSettings:
    return BehaviourSettings(pseudonym_key="k-now", **changes)


class World:
    def __init__(self, **changes: Any) -> None:
        self.config = config(**changes)
        self.products = catalogue()
        self.users = InMemoryUserStore()
        self.stats = InMemoryStatsStore()
        self.pseudonyms = Pseudonymiser(
            self.config.pseudonym_key, self.config.previous_pseudonym_keys
        )
        self.engine = BehaviourEngine(
            self.users, self.stats, self.products, self.pseudonyms, self.config
        )
        self.personaliser = Personaliser(
            self.users, self.stats, self.products, self.pseudonyms, self.config
        )
        self.offset = 0

    def inbound(self, *events: UserEvent | ForgetUser, shard: int = 0) -> list[Inbound]:
        out = []
        for e in events:
            out.append(Inbound(e, shard, self.offset))
            self.offset += 1
        return out

    def counts(self) -> dict[str, tuple[dict[str, float], float]]:
        """The non-empty shared counts, popularity decayed to one time, rounded: what a user
        could leave a trace in."""
        out = {}
        ref = int((T0 + timedelta(days=30)).timestamp() * 1000)
        half_life = self.config.half_life_hours * 3_600_000
        for r in self.stats.all():
            factor = decay(ref - r.at_ms, half_life) if r.kind == "c" else 1.0
            counts = {k: round(v * factor, 9) for k, v in r.counts.items()}
            if counts or r.total:
                out[r.key] = (counts, round(r.total, 9))
        return out


_seq = [0]


def click(user: str, product: str, minutes: float = 0, kind: str = "click", eid: str = "") -> Any:
    _seq[0] += 1
    return UserEvent(
        event_id=eid or f"e{_seq[0]}",
        user_id=user,
        product_id=product,
        type=kind,  # type: ignore[arg-type]
        timestamp=T0 + timedelta(minutes=minutes),
    )


def forget(user: str, minutes: float = 0) -> ForgetUser:
    _seq[0] += 1
    return ForgetUser(
        event_id=f"f{_seq[0]}", user_id=user, timestamp=T0 + timedelta(minutes=minutes)
    )
