"""Counting an event once: the recent event ids of one user and a horizon behind them.

Kept in the user's row and written in the same upsert as the taste vector, so a state and the
events it includes are always written together: after a crash the replayed events are found
here, whichever of them had been written. The ids are bounded; an evicted id moves the horizon
up to its event time, and an event at or before the horizon is refused, since it may be one
that was applied and forgotten. One user's events arrive in order (the topic is keyed by user),
so only an event that arrives after more than `capacity` later ones is lost this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecentEvents"]


@dataclass
class RecentEvents:
    capacity: int
    ids: dict[str, int] = field(default_factory=dict)
    """event id -> event time (ms)."""
    horizon_ms: int = -1

    def seen(self, event_id: str, at_ms: int) -> bool:
        """True for an event that may already count: never apply it again."""
        return event_id in self.ids or at_ms <= self.horizon_ms

    def add(self, event_id: str, at_ms: int) -> None:
        self.ids[event_id] = at_ms
        while len(self.ids) > self.capacity:
            oldest = min(self.ids, key=self.ids.__getitem__)
            self.horizon_ms = max(self.horizon_ms, self.ids.pop(oldest))

    def to_json(self) -> dict[str, Any]:
        return {"ids": self.ids, "horizon_ms": self.horizon_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, capacity: int) -> RecentEvents:
        data = data or {}
        ids = {str(k): int(v) for k, v in (data.get("ids") or {}).items()}
        return cls(capacity, ids, int(data.get("horizon_ms", -1)))
