"""What the chaos benchmark sends, decided up front from a seed, and what it must leave behind.

A catalogue: every product once (version 1), then, mixed into the rest of the stream, price
changes (reused vectors), title changes (new words: encoded again), deletes and products
brought back after their delete. A click stream on anchor products, which are indexed before
the clicks start and never change, so that an in-process replay of the same events can say
what every user's row must hold.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from schemas.product import ProductDelete, ProductUpsert
from schemas.user_event import EventType, ForgetUser, UserEvent
from shopvec.benchmarks.common import catalogue

__all__ = ["ChaosPlan", "plan_chaos"]

ProductEvent = ProductUpsert | ProductDelete

_TYPES: tuple[EventType, ...] = ("view", "click", "add_to_cart", "wishlist", "purchase")
_TYPE_WEIGHTS = (50, 30, 10, 6, 4)


@dataclass
class ChaosPlan:
    anchors: list[ProductUpsert]
    """Indexed first and never changed: what the clicks are about."""
    catalogue: list[ProductEvent]
    """Everything else, in the order it is published."""
    clicks: list[UserEvent | ForgetUser]
    expected: dict[str, ProductEvent] = field(default_factory=dict)
    """Each product id's latest event: what the products collection must reflect."""

    @property
    def product_events(self) -> int:
        return len(self.anchors) + len(self.catalogue)


def _latest(events: list[ProductEvent]) -> dict[str, ProductEvent]:
    out: dict[str, ProductEvent] = {}
    for e in events:
        if e.id not in out or e.version > out[e.id].version:
            out[e.id] = e
    return out


def plan_chaos(
    *,
    products: int,
    clicks: int,
    users: int,
    seed: int,
    anchors: int | None = None,
    now: datetime | None = None,
) -> ChaosPlan:
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    base = catalogue(products, prefix="chaos", now=now)
    n_anchors = anchors if anchors is not None else max(1, min(100, products // 10))
    anchor_list, rest = base[:n_anchors], base[n_anchors:]

    def stamp(p: ProductEvent, version: int) -> dict[str, object]:
        return {"version": version, "updated_at": now + timedelta(milliseconds=version)}

    changes: list[ProductEvent] = []
    for p in rest:
        roll = rng.random()
        if roll < 0.30:  # a new price: the vectors are reused
            price = Decimal(rng.randint(199, 4999))
            changes.append(p.model_copy(update={**stamp(p, 2), "price": price}))
        elif roll < 0.45:  # new words: the text is encoded again
            title = f"{p.title} (new season {rng.randint(1, 99)})"
            changes.append(p.model_copy(update={**stamp(p, 3), "title": title}))
        elif roll < 0.55:  # gone
            changes.append(ProductDelete(id=p.id, version=4, updated_at=now))
        elif roll < 0.58:  # gone, then back
            changes.append(ProductDelete(id=p.id, version=4, updated_at=now))
            changes.append(p.model_copy(update=stamp(p, 5)))
    # Each change goes somewhere after its product's first version, in the product's own order.
    stream: list[ProductEvent] = list(rest)
    for change in changes:
        first = next(i for i, e in enumerate(stream) if e.id == change.id)
        last = max(i for i, e in enumerate(stream) if e.id == change.id)
        stream.insert(rng.randint(max(first, last) + 1, len(stream)), change)

    user_ids = [f"shopper-{i}" for i in range(users)]
    # Spaced a quarter second apart, ending now: never ahead of the worker's clock (it refuses
    # what is), nor older than a user is kept.
    start = now - timedelta(milliseconds=250 * clicks)
    events: list[UserEvent | ForgetUser] = []
    for i in range(clicks):
        user = rng.choice(user_ids)
        at = start + timedelta(milliseconds=i * 250)
        if rng.random() < 0.001:
            events.append(ForgetUser(event_id=f"forget-{i}", user_id=user, timestamp=at))
            continue
        events.append(
            UserEvent(
                event_id=f"click-{i}",
                user_id=user,
                product_id=rng.choice(anchor_list).id,
                type=rng.choices(_TYPES, _TYPE_WEIGHTS)[0],
                timestamp=at,
            )
        )
    return ChaosPlan(anchor_list, stream, events, _latest([*anchor_list, *stream]))
