"""What the users collection holds for one pseudonym, and its row form.

One row carries the taste state, the recent event ids that make a replay count once, and the
window that is the user's share of the shared counts: all written in one upsert, so they never
disagree, whenever the process dies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shopvec.behaviour.dedupe import RecentEvents
from shopvec.behaviour.taste import TasteState
from shopvec.behaviour.window import ItemWindow

__all__ = ["UserProfile"]


@dataclass
class UserProfile:
    pseudonym: str
    shard: int
    """The partition whose worker owns the user's share of the shared counts."""
    taste: TasteState
    recent: RecentEvents
    window: ItemWindow
    last_event_ms: int = 0
    expiring: str | None = None
    """The op id of an expiry begun on the row and not yet finished (shopvec.behaviour.engine)."""

    @classmethod
    def new(
        cls, pseudonym: str, shard: int, dim: int, recent_capacity: int, window_capacity: int
    ) -> UserProfile:
        return cls(
            pseudonym,
            shard,
            TasteState.empty(dim),
            RecentEvents(recent_capacity),
            ItemWindow(window_capacity),
        )

    def to_row(self) -> dict[str, Any]:
        t = self.taste
        return {
            "pseudonym": self.pseudonym,
            "shard": self.shard,
            "taste_vec": np.asarray(t.vector, dtype=np.float32).tolist(),
            "weight": float(t.weight),
            "taste_ms": int(t.at_ms),
            "last_event_ms": int(self.last_event_ms),
            "prefs": {"category": t.categories, "brand": t.brands},
            "recent": {
                **self.recent.to_json(),
                **({"expiring": self.expiring} if self.expiring else {}),
            },
            "window": self.window.to_json(),
        }

    @classmethod
    def from_row(
        cls, row: dict[str, Any], recent_capacity: int, window_capacity: int
    ) -> UserProfile:
        prefs = row.get("prefs") or {}
        expiring = (row.get("recent") or {}).get("expiring")
        taste = TasteState(
            np.asarray(row["taste_vec"], dtype=np.float64),
            float(row["weight"]),
            int(row["taste_ms"]),
            {str(k): float(v) for k, v in (prefs.get("category") or {}).items()},
            {str(k): float(v) for k, v in (prefs.get("brand") or {}).items()},
        )
        return cls(
            str(row["pseudonym"]),
            int(row["shard"]),
            taste,
            RecentEvents.from_json(row.get("recent"), recent_capacity),
            ItemWindow.from_json(row.get("window"), window_capacity),
            int(row["last_event_ms"]),
            str(expiring) if expiring else None,
        )
