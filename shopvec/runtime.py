"""The composition root: builds encoders, stores and services from one Settings object."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from shopvec.encoders.base import Encoder
from shopvec.errors import is_transient
from shopvec.fusion import Fusion
from shopvec.settings import Settings
from shopvec.store.base import CollectionSpec
from shopvec.store.milvus import MilvusProductStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import Consumer, Producer
    from prometheus_client import CollectorRegistry
    from pymilvus import MilvusClient

    from shopvec.behaviour import BehaviourMetrics, Personaliser
    from shopvec.indexing import IndexOutcome
    from shopvec.kafka.batch import Handler
    from shopvec.kafka.loop import Retrier
    from shopvec.kafka.positions import Positions
    from shopvec.kafka.stream import StreamRuntime, Subscription
    from shopvec.metrics import IndexerMetrics, QueryMetrics
    from shopvec.search import SearchService

__all__ = [
    "attach_product_store",
    "build_behaviour_service",
    "build_encoder",
    "build_fusion",
    "build_indexer_service",
    "build_personaliser",
    "build_query_worker",
    "build_search_service",
    "build_store",
    "collection_spec",
    "milvus_client",
]

log = logging.getLogger(__name__)


def build_encoder(
    settings: Settings, *, threads: int | None = None, regions: bool = True
) -> Encoder:
    """threads: torch threads, in place of the encoder settings' own (the query worker's).
    regions: False for an encoder that only encodes queries, whose photos are never fused by
    their regions (their vectors are the same either way; the regions cost time)."""
    if threads is not None:
        settings = settings.model_copy(
            update={"encoder": settings.encoder.model_copy(update={"threads": threads})}
        )
    encoder = _build_base_encoder(settings, regions=regions)
    # Load the weights now, so a worker is ready only once its first request will be fast.
    warm_up = getattr(encoder, "warm_up", None)
    if callable(warm_up):
        warm_up()
    if settings.encoder.alignment_path:
        from shopvec.encoders.alignment import AlignedEncoder, load_alignment

        alignment = load_alignment(settings.encoder.alignment_path)
        log.info("photos aligned to words by %s", settings.encoder.alignment_path)
        return AlignedEncoder(encoder, alignment)
    return encoder


def _build_base_encoder(settings: Settings, *, regions: bool) -> Encoder:
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
            regions=regions,
        )
    from shopvec.encoders.offline import OfflineEncoder

    # The photos' regions are for attention fusion only; the other methods do without them.
    return OfflineEncoder(
        threads=enc.threads,
        batch_size=enc.batch_size,
        regions=regions and enc.fusion == "attention",
    )


def build_fusion(settings: Settings, encoder: Encoder) -> Fusion:
    return Fusion(
        method=settings.encoder.fusion,
        image_weight=settings.encoder.image_weight,
        joint_dim=encoder.info.joint_dim,
        weighting=settings.encoder.photo_weighting,
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


MILVUS_CONNECT_WAIT_S = 300.0
"""How long a connection to Milvus is tried at start before the process gives up (and its
supervisor starts it again)."""


def milvus_client(
    settings: Settings, timeout_s: float | None = None, *, wait_s: float = MILVUS_CONNECT_WAIT_S
) -> MilvusClient:
    """A client of the configured Milvus; every part of the project connects through this."""
    from pymilvus import MilvusClient

    m = settings.milvus
    options: dict[str, Any] = {}
    if settings.milvus_embedded:
        # pymilvus pings an idle channel every 10 s; the embedded Milvus Lite server keeps
        # gRPC's default of one ping per 5 minutes without calls, answers the excess with
        # GOAWAY "too many pings", and a client that then reconnects can be refused the same
        # way. Ping only while calls are in flight there.
        options["grpc_options"] = {"grpc.keepalive_permit_without_calls": False}
    # A worker that starts while Milvus restarts waits for it rather than exiting at once.
    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        try:
            return MilvusClient(
                uri=settings.milvus_uri(),
                token=m.token.get_secret_value() if m.token else "",
                db_name=m.db_name,
                timeout=m.timeout_s if timeout_s is None else timeout_s,
                **options,
            )
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("Milvus is not answering (%s); trying again in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(2 * delay, 10.0)


def build_store(settings: Settings, spec: CollectionSpec) -> MilvusProductStore:
    m = settings.milvus
    return MilvusProductStore(
        milvus_client(settings), spec, timeout_s=m.timeout_s, search_ef=m.search_ef
    )


def _stream(
    settings: Settings,
    worker: str,
    registry: CollectorRegistry,
    *,
    group_id: str,
    topic: str | Callable[[Consumer], Subscription],
    producer: Producer,
    handler: Callable[[Consumer, Retrier], Handler[Any]],
    max_message_bytes: int,
    size_setting: str,
    batch_size: int,
    batch_wait_s: float,
    max_in_flight: int = 1,
    consumer_overrides: dict[str, Any] | None = None,
    weigh: Callable[[Any], int] | None = None,
    positions: Positions | None = None,
) -> StreamRuntime[Any]:
    """A worker's runtime around the handler that `handler` builds from the consumer and the
    retrier they share; `topic` is the topic, or builds the subscription from the consumer."""
    from confluent_kafka import Consumer

    from shopvec.kafka import DeadLetterSink, consumer_config
    from shopvec.kafka.batch import StreamMetrics
    from shopvec.kafka.health import Health
    from shopvec.kafka.loop import Retrier
    from shopvec.kafka.stream import StreamRuntime

    metrics = StreamMetrics(worker, registry)
    retry = Retrier(
        Health(settings.ops.liveness_stall_s),
        on_retry=metrics.retries.labels(worker=worker).inc,
    )
    consumer = Consumer(consumer_config(settings, group_id, **(consumer_overrides or {})))
    sink = DeadLetterSink(
        producer,
        settings.topics.dead_letters,
        worker,
        max_bytes=settings.kafka.dead_letter_max_bytes,
        on_skip=lambda record, why: metrics.skipped.labels(
            worker=worker, kind=record.error_kind
        ).inc(),
    )
    return StreamRuntime(
        worker=worker,
        consumer=consumer,
        topic=topic if isinstance(topic, str) else topic(consumer),
        handler=handler(consumer, retry),
        dead_letters=sink,
        metrics=metrics,
        retry=retry,
        max_message_bytes=max_message_bytes,
        size_setting=size_setting,
        batch_size=batch_size,
        batch_wait_s=batch_wait_s,
        max_in_flight=max_in_flight,
        drain_timeout_s=settings.kafka.drain_timeout_s,
        weigh=weigh,
        positions=positions,
    )


def share_encoder_threads(settings: Settings, encoder: Encoder) -> int:
    """How many encoder threads the indexer runs: SHOPVEC_INDEXER__ENCODE_THREADS where the
    encoder may encode photos on several threads at once (its `concurrent_images`), else one;
    the encoder's torch threads (SHOPVEC_ENCODER__THREADS, or the cores this process may run
    on) are shared out among them. torch's thread count is the process's: called where the
    indexer runs, before it encodes."""
    import os

    from shopvec.encoders._torch import set_threads

    n = settings.indexer.encode_threads
    if n > 1 and not getattr(encoder, "concurrent_images", False):
        log.info(
            "%s encodes one batch at a time: one encoder thread, not %d", encoder.info.model_id, n
        )
        n = 1
    if n > 1:
        total = settings.encoder.threads or len(os.sched_getaffinity(0))
        set_threads(max(1, total // n))
    return n


def build_indexer_service(
    settings: Settings,
    encoder: Encoder | None = None,
    *,
    group_id: str | None = None,
    on_batch: Callable[[IndexOutcome], None] | None = None,
    positions: Positions | None = None,
) -> tuple[StreamRuntime[Any], IndexerMetrics]:
    """The indexer as its worker runs it; tests build the same thing in a thread.
    positions: where its partitions start and what it records besides its group's offsets;
    by default its collection's positions group (`shopvec.kafka.positions`)."""
    from confluent_kafka import Producer

    from shopvec.imaging import ImageLoader, colour
    from shopvec.indexing import IndexerService, ProductIndexer
    from shopvec.indexing.service import batch_weight, max_in_flight
    from shopvec.kafka import producer_config
    from shopvec.kafka.config import batch_fetch_wait_ms
    from shopvec.kafka.positions import GroupPositions, positions_group
    from shopvec.metrics import IndexerMetrics

    encoder = encoder or build_encoder(settings)
    encode_threads = share_encoder_threads(settings, encoder)
    fusion = build_fusion(settings, encoder)
    store = build_store(settings, collection_spec(settings, encoder, fusion))
    store.ensure()
    metrics = IndexerMetrics()
    indexer = ProductIndexer(encoder, store, ImageLoader(settings.images), fusion)
    # Like the encoder's weights: made before the first event, not while it waits.
    colour.warm_up()
    s = settings.indexer
    runtime = _stream(
        settings,
        "indexer",
        metrics.registry,
        group_id=group_id or s.group_id,
        topic=settings.topics.products,
        producer=Producer(producer_config(settings)),
        handler=lambda consumer, retry: IndexerService(
            indexer=indexer,
            metrics=metrics,
            retry=retry,
            flush_rows=s.flush_rows,
            flush_interval_s=s.flush_interval_s,
            flush_quiet_s=s.flush_quiet_s,
            on_batch=on_batch,
            encode_threads=encode_threads,
        ),
        max_message_bytes=s.max_event_bytes,
        size_setting="SHOPVEC_INDEXER__MAX_EVENT_BYTES",
        consumer_overrides={"fetch.wait.max.ms": batch_fetch_wait_ms(settings)},
        batch_size=s.batch_size,
        batch_wait_s=s.batch_wait_ms / 1000,
        max_in_flight=max_in_flight(encode_threads),
        weigh=batch_weight,
        positions=positions
        or GroupPositions(
            settings,
            positions_group(settings, store.collection),
            shared_group=group_id or s.group_id,
        ),
    )
    return runtime, metrics


def build_search_service(settings: Settings, encoder: Encoder | None = None) -> SearchService:
    from shopvec.imaging import ImageLoader
    from shopvec.search import SearchService
    from shopvec.search.glossary import cedict_glossary
    from shopvec.search.lexical import RetrievalConfig
    from shopvec.search.neighbour_words import NeighbourWords
    from shopvec.search.photo_crops import PhotoCrops
    from shopvec.search.photo_examples import PhotoExamples

    encoder = encoder or build_encoder(settings)
    fusion = build_fusion(settings, encoder)
    store = build_store(settings, collection_spec(settings, encoder, fusion))
    store.ensure()
    q = settings.query
    if q.translate_chinese or (store.lexical and "weighted" in q.retrieval.values()):
        # The glossary and the weighted ranker's coverages cut words with jieba: its
        # dictionary is loaded now, not on the first query with words.
        from shopvec.terms import jieba_loaded

        jieba_loaded()
    return SearchService(
        encoder,
        store,
        fusion,
        ImageLoader(settings.images),
        max_top_k=q.max_top_k,
        personaliser=build_personaliser(settings, store),
        retrieval=RetrievalConfig(
            {str(k): v for k, v in q.retrieval.items()}, q.rrf_k, q.lexical_weight
        ),
        glossary=cedict_glossary() if q.translate_chinese else None,
        photo_crops=PhotoCrops() if q.photo_crops else None,
        neighbour_words=(
            NeighbourWords(min_similarity=q.photo_neighbour_words_min_similarity)
            if q.photo_neighbour_words
            else None
        ),
        photo_examples=PhotoExamples(q.photo_examples) if q.photo_examples else None,
    )


def build_query_worker(
    settings: Settings, encoder: Encoder | None = None, *, group_id: str | None = None
) -> tuple[StreamRuntime[Any], QueryMetrics]:
    from confluent_kafka import Producer

    from shopvec.kafka import producer_config
    from shopvec.kafka.generations import RequestTopics
    from shopvec.kafka.topics import TopicGuard, topic_exists
    from shopvec.metrics import QueryMetrics
    from shopvec.search import QueryWorker

    metrics = QueryMetrics()
    q = settings.query
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    service = build_search_service(
        settings, encoder or build_encoder(settings, threads=q.encoder_threads, regions=False)
    )
    runtime = _stream(
        settings,
        "query",
        metrics.registry,
        group_id=group_id or q.group_id,
        # In generations where the broker keeps every record (shopvec.kafka.generations).
        topic=lambda consumer: RequestTopics(settings, consumer),
        producer=producer,
        handler=lambda consumer, retry: QueryWorker(
            producer=producer,
            default_reply_topic=settings.topics.search_replies,
            reply_topics=TopicGuard(
                settings.reply_topic_patterns(), topic_exists(producer, timeout_s=2.0)
            ),
            service=service,
            metrics=metrics,
            max_request_age_s=q.max_request_age_s,
        ),
        max_message_bytes=q.max_request_bytes,
        size_setting="SHOPVEC_QUERY__MAX_REQUEST_BYTES",
        batch_size=q.batch_size,
        batch_wait_s=q.batch_wait_ms / 1000,
        # Batches wait only for their replies' acknowledgements: never a reason to pause.
        max_in_flight=64,
        # Earliest, so a partition that changes hands in a rebalance before its first commit
        # loses no request; requests older than max_request_age_s are dropped.
        consumer_overrides={"auto.offset.reset": "earliest"},
    )
    return runtime, metrics


# -- user behaviour ---------------------------------------------------------------------------


def _behaviour_parts(
    settings: Settings, products: MilvusProductStore, client: MilvusClient
) -> tuple[Any, Any, Any]:
    from shopvec.behaviour import MilvusStatsStore, MilvusUserStore, Pseudonymiser
    from shopvec.behaviour.milvus import counts_collection

    m, b = settings.milvus, settings.behaviour
    users = MilvusUserStore(
        client, m.users_collection, products.spec.fused_dim, timeout_s=m.timeout_s
    )
    stats = MilvusStatsStore(client, counts_collection(m.users_collection), timeout_s=m.timeout_s)
    users.ensure()
    stats.ensure()
    return users, stats, Pseudonymiser(b.pseudonym_key, b.previous_pseudonym_keys)


def build_personaliser(settings: Settings, products: MilvusProductStore) -> Personaliser:
    """Personalised ranking for the query worker, on the users collection and its counts."""
    from shopvec.behaviour import Personaliser

    users, stats, pseudonyms = _behaviour_parts(settings, products, milvus_client(settings))
    return Personaliser(users, stats, products, pseudonyms, settings.behaviour)


def attach_product_store(settings: Settings, wait_s: float = 600.0) -> MilvusProductStore:
    """The products collection as the indexer made it, read from Milvus with no encoder
    loaded; waits for it (the indexer creates it at start)."""
    from shopvec.store.milvus import spec_from_collection

    client = milvus_client(settings)
    m = settings.milvus
    deadline = time.monotonic() + wait_s
    while True:
        try:
            spec = spec_from_collection(client, m.collection, timeout_s=m.timeout_s)
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for the products collection %s: %s", m.collection, exc)
            time.sleep(2.0)
    store = MilvusProductStore(client, spec, timeout_s=m.timeout_s, search_ef=m.search_ef)
    # Loaded now, as the indexer's own store is, rather than on the first "released" answer.
    store.loader.ensure()
    return store


def build_behaviour_service(
    settings: Settings, *, group_id: str | None = None
) -> tuple[StreamRuntime[Any], BehaviourMetrics]:
    """The behaviour worker: user events in, taste vectors and shared counts in Milvus."""
    from confluent_kafka import Producer

    from shopvec.behaviour import BehaviourEngine, BehaviourMetrics, BehaviourService
    from shopvec.kafka import producer_config
    from shopvec.kafka.config import batch_fetch_wait_ms

    b = settings.behaviour
    products = attach_product_store(settings)
    users, stats, pseudonyms = _behaviour_parts(settings, products, products.client)
    metrics = BehaviourMetrics()
    engine = BehaviourEngine(users, stats, products, pseudonyms, b)
    runtime = _stream(
        settings,
        "behaviour",
        metrics.registry,
        group_id=group_id or b.group_id,
        topic=settings.topics.user_events,
        producer=Producer(producer_config(settings)),
        handler=lambda consumer, retry: BehaviourService(
            consumer=consumer,
            engine=engine,
            metrics=metrics,
            retry=retry,
            expiry_interval_s=b.expiry_interval_s,
            max_future_s=b.max_future_s,
            max_age_s=b.inactive_ttl_days * 86_400,
        ),
        max_message_bytes=b.max_event_bytes,
        size_setting="SHOPVEC_BEHAVIOUR__MAX_EVENT_BYTES",
        consumer_overrides={"fetch.wait.max.ms": batch_fetch_wait_ms(settings)},
        batch_size=b.batch_size,
        batch_wait_s=b.batch_wait_ms / 1000,
    )
    return runtime, metrics
