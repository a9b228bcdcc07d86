"""Rebuilding a collection from the product topic's beginning, then switching the alias.

A change of model or fusion gets a collection of its own (its name records both). `reindex`
fills it from the first offset while the current collection keeps serving, and once it has
caught up points the alias at it. Query workers search their own model's collection, so no
search ever meets vectors of two models.

It records how far it has written in the collection's positions group
(`shopvec.kafka.positions`), which the new model's indexers start each partition from: the
events the old model's indexers took between the end of the reindex and the rollout reach the
new collection too. A reindex run again starts from the first offset again, and skips by
version what the collection already holds.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from tqdm import tqdm

from shopvec.encoders.base import Encoder
from shopvec.kafka.config import common_config
from shopvec.kafka.positions import GroupPositions, positions_group
from shopvec.runtime import (
    build_encoder,
    build_fusion,
    build_indexer_service,
    build_store,
    collection_spec,
)
from shopvec.settings import Settings

__all__ = ["reindex", "topic_ends", "topic_size"]


def topic_ends(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """Each partition's low and high watermark."""
    conf = common_config(settings)
    conf["group.id"] = f"shopvec-size-{uuid.uuid4().hex}"
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=10)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in meta.topics[topic].partitions
        }
    finally:
        consumer.close()


def topic_size(settings: Settings, topic: str) -> int:
    """Messages currently in the topic, from the partitions' watermarks."""
    return _size(topic_ends(settings, topic))


def _size(ends: dict[int, tuple[int, int]]) -> int:
    return sum(max(0, high - low) for low, high in ends.values())


class _FromTheStart:
    """The reindex's positions: every partition from its first offset (a collection filled in
    part, by a reindex cut short or by indexers that ran first, is filled again; what it holds
    is skipped by version, not encoded), recorded in the collection's positions group as it
    goes, and how far its batches have been written, record by record: a record refused unread,
    or a gap left by compaction, counts as passed, where counting the events read never got
    there."""

    def __init__(self, record: GroupPositions) -> None:
        self._record = record
        self.written: dict[int, int] = {}

    def starts(self, partitions: Sequence[TopicPartition]) -> dict[tuple[str, int], int]:
        self._record.hold(partitions)
        return {(tp.topic, tp.partition): OFFSET_BEGINNING for tp in partitions}

    def advance(self, messages: Iterable[Message]) -> None:
        messages = list(messages)
        for msg in messages:
            offset, partition = msg.offset(), msg.partition()
            if offset is not None and partition is not None:
                self.written[partition] = max(self.written.get(partition, 0), offset + 1)
        self._record.advance(messages)

    def through(self, ends: dict[int, tuple[int, int]]) -> bool:
        """Whether every partition is written up to its high watermark in `ends`."""
        return all(self.written.get(p, low) >= high for p, (low, high) in ends.items())

    def commit(self, *, force: bool = False) -> None:
        self._record.commit(force=force)

    def drop(self, partitions: Sequence[TopicPartition]) -> None:
        self._record.drop(partitions)

    def close(self) -> None:
        self._record.close()


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
    that was there at the start has been written (or dead-lettered), and nothing new came for
    idle_s. The alias moves only once caught up and the indexer stopped
    cleanly: an indexer that died, or a timeout, leaves it where it was (`switched` False,
    with the reason), since the collection may lack products."""
    encoder = encoder or build_encoder(settings)
    fusion = build_fusion(settings, encoder)
    store = build_store(settings, collection_spec(settings, encoder, fusion))
    store.ensure()
    topic = settings.topics.products
    ends = topic_ends(settings, topic)
    total = _size(ends)
    # A group of its own shares the partitions out; the collection's positions group, which
    # no consumer joins (so Kafka keeps each of its offsets for a retention period from its
    # commit), records how far the reindex has written.
    group = f"shopvec-reindex-{store.collection[:80]}-{uuid.uuid4().hex[:8]}"
    record = GroupPositions(settings, positions_group(settings, store.collection))
    # First of all, the collection holds nothing: a reindex that then records nothing more
    # (an empty topic, killed before its first commit) leaves the new model's indexers to
    # start every partition at its beginning, not to take the old model's offsets over.
    record.record({(topic, p): low for p, (low, _) in ends.items()})
    written = _FromTheStart(record)
    service, metrics = build_indexer_service(settings, encoder, group_id=group, positions=written)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="reindex", daemon=True)
    started = time.monotonic()
    thread.start()
    seen, last_change = 0.0, time.monotonic()
    caught_up = False
    with tqdm(total=total, unit="event", desc="reindexing", disable=not progress) as bar:
        while thread.is_alive() and time.monotonic() - started < timeout_s:
            now_seen = metrics.events_in._value.get()
            now = time.monotonic()
            if now_seen != seen:
                seen, last_change = now_seen, now
                bar.update(min(total, int(now_seen)) - bar.n)
            if now - last_change >= idle_s and written.through(ends):
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
