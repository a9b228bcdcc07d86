"""Topic creation: every topic with its configured partition count, idempotently; and how
many records the request/reply path's partitions hold."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from shopvec.kafka.config import admin_config, common_config
from shopvec.settings import Settings

__all__ = ["create_topic", "delete_topics", "ensure_topics", "request_reply_depths"]

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Creates the missing topics; returns the names that were created."""
    topics = settings.topics
    wanted = [
        NewTopic(name, topics.partitions.get(role, 1), topics.replication_factor)
        for role, name in topics.all().items()
    ]
    return _create(AdminClient(admin_config(settings)), wanted, timeout_s)


def create_topic(
    settings: Settings,
    name: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> bool:
    new = NewTopic(name, partitions, settings.topics.replication_factor, config=config or {})
    return bool(_create(AdminClient(admin_config(settings)), [new], timeout_s))


def delete_topics(settings: Settings, names: Iterable[str], timeout_s: float = 30.0) -> None:
    admin = AdminClient(admin_config(settings))  # must outlive the futures it hands out
    futures = admin.delete_topics(list(names), request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            log.debug("topic %s was already gone", name)


def _create(admin: AdminClient, wanted: list[NewTopic], timeout_s: float) -> list[str]:
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created:
        log.info("created topics %s", ", ".join(created))
    return created


def request_reply_depths(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Records held by each partition of the search requests topic (each of its generations)
    and of the reply topics (`topic[partition]` to the count), largest first. On the embedded
    broker a fetch on the request/reply path returns nothing once a partition holds tens of
    thousands of records (docs/benchmarks.md, "The embedded broker"), so `shopvec status`
    warns before that."""
    from shopvec.kafka.generations import generations_of

    topics = settings.topics
    consumer = Consumer({**common_config(settings), "group.id": "shopvec-status"})
    try:
        listed = consumer.list_topics(timeout=timeout_s).topics
        depths: dict[str, int] = {}
        for name, meta in listed.items():
            requests = generations_of(topics.search_requests, [name])
            if not requests and not name.startswith(topics.search_replies):
                continue
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=timeout_s
                )
                depths[f"{name}[{p}]"] = max(0, high - low)
    finally:
        consumer.close()
    return dict(sorted(depths.items(), key=lambda kv: -kv[1]))
