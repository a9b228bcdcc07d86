"""The composition root: builds encoders, stores and services from one Settings object."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shopvec.encoders.base import Encoder
from shopvec.fusion import Fusion
from shopvec.settings import Settings
from shopvec.store.base import CollectionSpec
from shopvec.store.milvus import MilvusProductStore

if TYPE_CHECKING:
    from shopvec.indexing import IndexerService
    from shopvec.metrics import IndexerMetrics, QueryMetrics
    from shopvec.search import QueryWorker, SearchService

__all__ = [
    "build_encoder",
    "build_fusion",
    "build_indexer_service",
    "build_query_worker",
    "build_search_service",
    "build_store",
    "collection_spec",
]

log = logging.getLogger(__name__)


def build_encoder(settings: Settings) -> Encoder:
    enc = settings.encoder
    if enc.backend == "clip":
        from shopvec.encoders.clip import ClipFamilyEncoder

        if not enc.model_path:
            raise ValueError("the clip encoder needs SHOPVEC_ENCODER__MODEL_PATH")
        return ClipFamilyEncoder.from_pretrained(
            enc.model_path,
            device=enc.device,
            dtype=enc.dtype,
            threads=enc.threads,
            batch_size=enc.batch_size,
        )
    from shopvec.encoders.offline import OfflineEncoder

    return OfflineEncoder(threads=enc.threads, batch_size=enc.batch_size)


def build_fusion(settings: Settings, encoder: Encoder) -> Fusion:
    return Fusion(
        method=settings.encoder.fusion,
        image_weight=settings.encoder.image_weight,
        joint_dim=encoder.info.joint_dim,
    )


def collection_spec(settings: Settings, encoder: Encoder, fusion: Fusion) -> CollectionSpec:
    m = settings.milvus
    return CollectionSpec(
        alias=m.collection,
        encoder=encoder.info,
        fusion_key=fusion.key,
        fused_dim=fusion.fused_dim,
        metric=settings.encoder.metric,
        index_type=m.index_type,
        hnsw_m=m.hnsw_m,
        hnsw_ef_construction=m.hnsw_ef_construction,
    )


def build_store(settings: Settings, spec: CollectionSpec) -> MilvusProductStore:
    m = settings.milvus
    return MilvusProductStore.connect(
        settings.milvus_uri(),
        spec,
        token=m.token.get_secret_value() if m.token else None,
        db_name=m.db_name,
        timeout_s=m.timeout_s,
        search_ef=m.search_ef,
    )


def build_indexer_service(
    settings: Settings, encoder: Encoder | None = None, *, group_id: str | None = None
) -> tuple[IndexerService, IndexerMetrics]:
    """The indexer as its worker runs it; tests build the same thing in a thread."""
    from confluent_kafka import Consumer, Producer

    from shopvec.imaging import ImageLoader
    from shopvec.indexing import IndexerService, ProductIndexer
    from shopvec.kafka import DeadLetterSink, consumer_config, producer_config
    from shopvec.metrics import IndexerMetrics

    encoder = encoder or build_encoder(settings)
    fusion = build_fusion(settings, encoder)
    store = build_store(settings, collection_spec(settings, encoder, fusion))
    store.ensure()
    metrics = IndexerMetrics()
    service = IndexerService(
        consumer=Consumer(consumer_config(settings, group_id or settings.indexer.group_id)),
        topic=settings.topics.products,
        indexer=ProductIndexer(encoder, store, ImageLoader(settings.images), fusion),
        dead_letters=DeadLetterSink(
            Producer(producer_config(settings)), settings.topics.dead_letters, "indexer"
        ),
        metrics=metrics,
        batch_size=settings.indexer.batch_size,
        batch_wait_s=settings.indexer.batch_wait_ms / 1000,
    )
    return service, metrics


def build_search_service(settings: Settings, encoder: Encoder | None = None) -> SearchService:
    from shopvec.imaging import ImageLoader
    from shopvec.search import SearchService

    encoder = encoder or build_encoder(settings)
    fusion = build_fusion(settings, encoder)
    store = build_store(settings, collection_spec(settings, encoder, fusion))
    store.ensure()
    return SearchService(
        encoder, store, fusion, ImageLoader(settings.images), max_top_k=settings.query.max_top_k
    )


def build_query_worker(
    settings: Settings, encoder: Encoder | None = None, *, group_id: str | None = None
) -> tuple[QueryWorker, QueryMetrics]:
    from confluent_kafka import Consumer, Producer

    from shopvec.kafka import DeadLetterSink, consumer_config, producer_config
    from shopvec.metrics import QueryMetrics
    from shopvec.search import QueryWorker

    metrics = QueryMetrics()
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    worker = QueryWorker(
        consumer=Consumer(
            consumer_config(
                settings,
                group_id or settings.query.group_id,
                # A search nobody waited for is worth nothing: start at the end, not replay.
                **{"auto.offset.reset": "latest"},
            )
        ),
        producer=producer,
        topic=settings.topics.search_requests,
        default_reply_topic=settings.topics.search_replies,
        service=build_search_service(settings, encoder),
        dead_letters=DeadLetterSink(producer, settings.topics.dead_letters, "query"),
        metrics=metrics,
        batch_size=settings.query.batch_size,
        batch_wait_s=settings.query.batch_wait_ms / 1000,
    )
    return worker, metrics
