"""Rebuilding a collection from the product topic's beginning, then switching the alias.

A change of model or fusion gets a collection of its own (its name records both). `reindex`
fills it with a fresh consumer group from the first offset while the current collection keeps
serving, and once it has caught up points the alias at it. Query workers search their own
model's collection, so no search ever meets vectors of two models.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from shopvec.encoders.base import Encoder
from shopvec.kafka.config import common_config
from shopvec.runtime import (
    build_encoder,
    build_fusion,
    build_indexer_service,
    build_store,
    collection_spec,
)
from shopvec.settings import Settings

__all__ = ["reindex", "topic_size"]


def topic_size(settings: Settings, topic: str) -> int:
    """Messages currently in the topic, from the partitions' watermarks."""
    conf = common_config(settings)
    conf["group.id"] = f"shopvec-size-{uuid.uuid4().hex}"
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += max(0, high - low)
        return total
    finally:
        consumer.close()


def reindex(
    settings: Settings,
    *,
    switch_alias: bool = True,
    idle_s: float = 3.0,
    progress: bool = True,
    timeout_s: float = 24 * 3600,
    encoder: Encoder | None = None,
) -> dict[str, Any]:
    """Consumes the whole topic into this model's collection; caught up means every message
    that was there at the start has been read and nothing new came for idle_s (a watermark
    alone can be off by a few messages on some brokers). The alias moves only once caught up
    and the indexer stopped cleanly: an indexer that died, or a timeout, leaves it where it
    was (`switched` False, with the reason), since the collection may lack products."""
    encoder = encoder or build_encoder(settings)
    fusion = build_fusion(settings, encoder)
    store = build_store(settings, collection_spec(settings, encoder, fusion))
    store.ensure()
    total = topic_size(settings, settings.topics.products)
    group = f"shopvec-reindex-{store.collection[:80]}-{uuid.uuid4().hex[:8]}"
    service, metrics = build_indexer_service(settings, encoder, group_id=group)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="reindex", daemon=True)
    started = time.monotonic()
    thread.start()
    seen, last_change = 0.0, time.monotonic()
    caught_up = False
    with tqdm(total=total, unit="event", desc="reindexing", disable=not progress) as bar:
        while thread.is_alive() and time.monotonic() - started < timeout_s:
            now_seen = metrics.events_in._value.get()
            if now_seen != seen:
                seen, last_change = now_seen, time.monotonic()
                bar.update(int(now_seen) - bar.n)
            if now_seen >= total and time.monotonic() - last_change >= idle_s:
                caught_up = True
                break
            time.sleep(0.2)
    # Stopping drains: every event consumed so far is written before the consumer closes.
    stop.set()
    thread.join(120)
    if not caught_up:
        unfinished = (
            "the indexer stopped before it caught up"
            if time.monotonic() - started < timeout_s
            else f"not caught up within {timeout_s:g} s ({int(seen)} of {total} events)"
        )
    elif thread.is_alive():
        unfinished = "the indexer did not stop within 120 s, so its last writes are not sure"
    else:
        unfinished = ""
    if switch_alias and not unfinished:
        store.point_alias_here()
    return {
        "collection": store.collection,
        "events": int(seen),
        "live_products": store.count(),
        "alias": store.alias_target(),
        "switched": switch_alias and not unfinished,
        "unfinished": unfinished,
        "seconds": round(time.monotonic() - started, 1),
    }
