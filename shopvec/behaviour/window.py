"""A user's share of the shared counts: their last distinct items, and what changing them adds.

Co-occurrence and popularity are sums over every user's window of recent distinct items: a pair
of items counts once for each user who has both in their window; an item's popularity is the
decayed number of users who put it in their window lately, per category. A user's window, kept
in their row, is therefore exactly their share, so forgetting a user subtracts exactly what they
added and leaves the counts as if they had never been there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL_CATEGORIES", "Contribution", "ItemWindow"]

ALL_CATEGORIES = "*"
"""The popularity row every item counts in, whatever its categories."""


@dataclass
class Contribution:
    """Changes to the shared counts: +1/-1 per item pair (both ways), per item's user count,
    and decayed popularity amounts, each stated at the time it was added."""

    pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    popularity: list[tuple[str, str, float, int]] = field(default_factory=list)
    """(category, item, amount, at_ms)."""

    def pair(self, a: str, b: str, change: int) -> None:
        for key in ((a, b), (b, a)):
            self.pairs[key] = self.pairs.get(key, 0) + change

    def user(self, item: str, change: int) -> None:
        self.users[item] = self.users.get(item, 0) + change

    def popular(self, categories: Sequence[str], item: str, amount: float, at_ms: int) -> None:
        for name in (ALL_CATEGORIES, *categories):
            self.popularity.append((name, item, amount, at_ms))

    def merge(self, other: Contribution) -> None:
        for key, change in other.pairs.items():
            self.pairs[key] = self.pairs.get(key, 0) + change
        for item, change in other.users.items():
            self.user(item, change)
        self.popularity.extend(other.popularity)

    def __bool__(self) -> bool:
        return bool(self.pairs or self.users or self.popularity)


@dataclass
class ItemWindow:
    capacity: int
    items: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    """item -> (time it entered the window, its categories), oldest first."""

    def touch(self, item: str, at_ms: int, categories: Sequence[str], out: Contribution) -> None:
        """The user interacted with `item`: it becomes their most recent one."""
        if item in self.items:
            old_ms, old_categories = self.items.pop(item)
            out.popular(old_categories, item, -1.0, old_ms)
        else:
            for other in self.items:
                out.pair(item, other, +1)
            out.user(item, +1)
        self.items[item] = (at_ms, list(categories))
        out.popular(categories, item, +1.0, at_ms)
        while len(self.items) > self.capacity:
            self._evict(next(iter(self.items)), out)

    def release(self, out: Contribution) -> None:
        """Takes the whole share back: the user is forgotten or expired."""
        while self.items:
            self._evict(next(iter(self.items)), out)

    def _evict(self, item: str, out: Contribution) -> None:
        at_ms, categories = self.items.pop(item)
        for other in self.items:
            out.pair(item, other, -1)
        out.user(item, -1)
        out.popular(categories, item, -1.0, at_ms)

    def recency(self) -> list[tuple[str, int]]:
        """(item, time) pairs, the most recent first."""
        return [(item, at) for item, (at, _) in reversed(self.items.items())]

    def to_json(self) -> list[list[Any]]:
        return [[item, at, cats] for item, (at, cats) in self.items.items()]

    @classmethod
    def from_json(cls, data: list[Any] | None, capacity: int) -> ItemWindow:
        items = {str(i): (int(at), [str(c) for c in cats]) for i, at, cats in data or []}
        return cls(capacity, items)
