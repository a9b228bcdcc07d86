"""Prometheus metrics of the behaviour worker, in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["BehaviourMetrics"]


@dataclass
class BehaviourMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events_in = Counter("shopvec_behaviour_events", "User events consumed", registry=r)
        self.applied = Counter(
            "shopvec_behaviour_applied", "Interactions applied to a taste vector", registry=r
        )
        self.duplicates = Counter(
            "shopvec_behaviour_duplicates", "Events already counted (replays)", registry=r
        )
        self.unknown_products = Counter(
            "shopvec_behaviour_unknown_products",
            "Interactions with a product that is not indexed",
            registry=r,
        )
        self.forgotten = Counter("shopvec_behaviour_forgotten", "Users forgotten", registry=r)
        self.expired = Counter("shopvec_behaviour_expired", "Inactive users dropped", registry=r)
        self.batch_seconds = Histogram(
            "shopvec_behaviour_batch_seconds", "From a batch consumed to written", registry=r
        )
