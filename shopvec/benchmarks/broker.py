"""`shopvec bench broker`: how a produce-to-fetch round trip on one partition changes as the
partition fills with record batches.

A search request or reply at tens a second is a record batch of its own, so a request and a
reply topic hold about as many batches as they have carried. A Kafka broker finds a fetch
offset through its index, whatever a partition holds; the embedded broker (Tansu, memory
storage) was measured slowing down as a partition filled, keeping no retention and refusing to
delete records. The benchmark fills a fresh topic with single-record batches up to each
count asked for and, at each, times round trips the way the search client makes them: one
record produced (linger 0), read back by a consumer assigned to the partition, with the fetch
wait the client uses.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from shopvec.benchmarks.common import percentile
from shopvec.kafka.admin import create_topic, delete_topics
from shopvec.kafka.config import consumer_config, producer_config, reply_reader_config
from shopvec.settings import Settings

__all__ = ["age_topic", "run_broker_bench"]

_FILLER = b"x" * 3000
"""About the size of a search reply."""


def _round_trip_ms(producer: Producer, consumer: Consumer, topic: str, timeout_s: float) -> float:
    marker = uuid.uuid4().bytes
    started = time.perf_counter()
    producer.produce(topic, value=marker + _FILLER)
    producer.poll(0)
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        msg = consumer.poll(max(0.0, deadline - time.perf_counter()))
        if msg is not None and msg.error() is None and (msg.value() or b"")[:16] == marker:
            return (time.perf_counter() - started) * 1000
    raise TimeoutError(f"a record produced to {topic} was not fetched within {timeout_s}s")


def age_topic(
    settings: Settings,
    topic: str,
    records: int,
    *,
    group_id: str | None = None,
    timeout_s: float = 600.0,
) -> None:
    """Fills every partition of an existing topic with `records` single-record batches in all
    (what a long-running stack's request or reply topic holds after that many searches at tens
    a second); then, for group_id, commits that group's offsets at the end, so that a worker
    of the group starts after them as a long-running one would be."""
    producer = Producer(producer_config(settings, **{"linger.ms": 0, "batch.num.messages": 1}))
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=_FILLER)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(timeout_s):
        raise TimeoutError(f"{topic} was not filled within {timeout_s}s")
    if group_id is None:
        return
    consumer = Consumer(consumer_config(settings, group_id))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        ends = []
        for p in meta.topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            ends.append(TopicPartition(topic, p, high))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def run_broker_bench(
    settings: Settings,
    *,
    batches: tuple[int, ...] = (0, 1000, 3000),
    probes: int = 100,
    pause_s: float = 0.01,
    timeout_s: float = 10.0,
    topic_config: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Round-trip figures at each count of batches in the partition (counts ascending), on a
    topic created with topic_config (e.g. retention.ms, to see whether the broker applies it)."""
    topic = f"bench-broker-{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic, 1, topic_config)
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    consumer = Consumer(reply_reader_config(settings))
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
    out: dict[str, Any] = {
        "bootstrap": settings.kafka_bootstrap(),
        "fetch_wait_max_ms": settings.fetch_wait_ms(),
        "probes": probes,
        "topic_config": topic_config or {},
        "batches": {},
    }
    held = 0
    try:
        # The consumer's first fetches find the partition's end; the first probe is not timed.
        _round_trip_ms(producer, consumer, topic, timeout_s)
        held += 1
        for target in sorted(batches):
            while held < target:
                producer.produce(topic, value=_FILLER)
                producer.flush(timeout_s)
                held += 1
            times = []
            for _ in range(probes):
                times.append(_round_trip_ms(producer, consumer, topic, timeout_s))
                held += 1
                time.sleep(pause_s)
            out["batches"][str(target)] = {
                "round_trip_p50_ms": round(percentile(times, 50), 2),
                "round_trip_p90_ms": round(percentile(times, 90), 2),
                "round_trip_p99_ms": round(percentile(times, 99), 2),
            }
    finally:
        consumer.close()
        producer.flush(timeout_s)
        delete_topics(settings, [topic], timeout_s=timeout_s)
    return out
