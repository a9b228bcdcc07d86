"""Prometheus metrics of the workers, in a registry of their own (tests build fresh ones)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["IndexerMetrics", "QueryMetrics"]

_FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


@dataclass
class IndexerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events_in = Counter("shopvec_indexer_events", "Product events consumed", registry=r)
        self.encoded_texts = Counter("shopvec_indexer_encoded_texts", "Texts encoded", registry=r)
        self.encoded_images = Counter(
            "shopvec_indexer_encoded_images", "Images encoded", registry=r
        )
        self.written = Counter("shopvec_indexer_written", "Rows written to Milvus", registry=r)
        self.deleted = Counter("shopvec_indexer_deleted", "Products deleted", registry=r)
        self.skipped_unchanged = Counter(
            "shopvec_indexer_skipped_unchanged",
            "Events that changed nothing (replays, stale versions)",
            registry=r,
        )
        self.reused = Counter(
            "shopvec_indexer_reused_vectors",
            "Products written with stored vectors, nothing re-encoded",
            registry=r,
        )
        self.batch_size = Histogram(
            "shopvec_indexer_batch_size",
            "Events per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.encode_seconds = Histogram(
            "shopvec_indexer_encode_seconds", "Encoder time per micro-batch", registry=r
        )
        self.freshness_seconds = Histogram(
            "shopvec_indexer_freshness_seconds",
            "From the event's updated_at to searchable in Milvus",
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )


@dataclass
class QueryMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "shopvec_query_requests", "Search requests", ["scenario"], registry=r
        )
        self.errors = Counter("shopvec_query_errors", "Error replies", ["kind"], registry=r)
        self.expired = Counter(
            "shopvec_query_expired", "Requests too old to answer, dropped", registry=r
        )
        self.unacknowledged = Counter(
            "shopvec_query_replies_unacknowledged",
            "Replies the broker had not acknowledged when their requests grew too old to "
            "answer or their reply topics were found deleted: their batches went on without them",
            registry=r,
        )
        self.latency_seconds = Histogram(
            "shopvec_query_seconds", "From consume to reply produced", registry=r
        )
