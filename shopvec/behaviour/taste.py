"""Taste vectors: a time-decayed, event-weighted sum of the fused vectors of a user's products.

The state is the decayed sum, its total weight and the time both are decayed to. An event at
time t with weight w adds w * 0.5 ** ((T - t) / half_life) * v, where T is the latest event
time seen: a newer event first decays the state to its own time, an older one is decayed to the
state's time. So the result is the same whatever order the events arrive in. The taste vector
is the sum's direction. Category and brand preferences decay the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAX_PREFERENCES", "TasteState", "decay"]

MAX_PREFERENCES = 64
"""Categories and brands kept per user, the strongest first."""

_DROP = 1e-9


def decay(dt_ms: float, half_life_ms: float) -> float:
    """The share of a weight left after dt_ms."""
    return float(0.5 ** (max(dt_ms, 0.0) / half_life_ms))


@dataclass
class TasteState:
    vector: np.ndarray
    weight: float = 0.0
    at_ms: int = 0
    categories: dict[str, float] = field(default_factory=dict)
    brands: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, dim: int) -> TasteState:
        return cls(np.zeros(dim, dtype=np.float64))

    def add(
        self,
        vector: np.ndarray,
        weight: float,
        at_ms: int,
        half_life_ms: float,
        *,
        categories: Iterable[str] = (),
        brand: str | None = None,
    ) -> None:
        if at_ms >= self.at_ms:
            self._scale(decay(at_ms - self.at_ms, half_life_ms))
            self.at_ms = at_ms
            share = weight
        else:
            share = weight * decay(self.at_ms - at_ms, half_life_ms)
        self.vector = self.vector + share * np.asarray(vector, dtype=np.float64)
        self.weight += share
        for name in categories:
            self.categories[name] = self.categories.get(name, 0.0) + share
        if brand:
            self.brands[brand] = self.brands.get(brand, 0.0) + share
        self.categories = _strongest(self.categories)
        self.brands = _strongest(self.brands)

    def _scale(self, factor: float) -> None:
        self.vector = self.vector * factor
        self.weight *= factor
        self.categories = {k: v * factor for k, v in self.categories.items()}
        self.brands = {k: v * factor for k, v in self.brands.items()}

    def unit(self) -> np.ndarray | None:
        """The taste vector: the sum's direction; None when nothing points anywhere."""
        norm = float(np.linalg.norm(self.vector))
        if norm < 1e-9:
            return None
        return (self.vector / norm).astype(np.float32)

    def weight_at(self, now_ms: int, half_life_ms: float) -> float:
        return self.weight * decay(now_ms - self.at_ms, half_life_ms)


def _strongest(prefs: dict[str, float]) -> dict[str, float]:
    kept = {k: v for k, v in prefs.items() if abs(v) > _DROP}
    if len(kept) <= MAX_PREFERENCES:
        return kept
    top = sorted(kept.items(), key=lambda kv: -kv[1])[:MAX_PREFERENCES]
    return dict(top)
