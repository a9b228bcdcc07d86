"""The search requests topic in generations on the real broker (shopvec.kafka.generations):
searches through a real query worker go on being answered while the topic is replaced again
and again, and a retired generation is deleted from the broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from shopvec.client import SearchClient
from shopvec.kafka.config import consumer_config, producer_config
from shopvec.kafka.generations import RequestTopics, generation_topic, request_generations
from shopvec.runtime import build_query_worker
from shopvec.settings import Settings
from tests.integration.conftest import running

pytestmark = pytest.mark.integration


def _limited(settings: Settings, records: int) -> Settings:
    kafka = settings.kafka.model_copy(update={"request_topic_records": records})
    return settings.model_copy(update={"kafka": kafka})


def test_searches_are_answered_while_the_requests_topic_is_replaced(settings, encoder) -> None:
    s = _limited(settings, 5)
    query, _ = build_query_worker(s, encoder)
    with running(query.run, query.ready), SearchClient(s, timeout_s=60) as client:
        for i in range(60):
            reply = client.search(f"blue shirt {i}", top_k=3)
            assert reply.error is None
            time.sleep(0.05)
        # A partition takes 5 records before the move, and a client that saw its topic
        # full asks where requests go at most once a second: 60 searches over more than 4 s
        # pass through at least three generations, the newest a standby.
        made = request_generations(s)
    base = s.topics.search_requests
    assert made[:4] == [generation_topic(base, g) for g in range(4)]


def _fill(s: Settings, topic: str, records: int) -> None:
    producer = Producer(producer_config(s, **{"linger.ms": 0, "batch.num.messages": 1}))
    for i in range(records):
        producer.produce(topic, key=str(i).encode(), value=b"{}", partition=0)
        producer.flush(10)


def test_a_retired_generation_is_deleted_from_the_broker(settings) -> None:
    s = _limited(settings, 5)
    base = s.topics.search_requests
    now = [0.0]
    consumer = Consumer(consumer_config(s, f"generations-{uuid.uuid4().hex}"))
    try:
        workers = RequestTopics(
            s, consumer, clock=lambda: now[0], unsubscribe_after_s=40, delete_after_s=60
        )
        names = [generation_topic(base, g) for g in range(4)]
        assert workers.topics() == names[:2]  # the standby, made ahead
        _fill(s, base, 5)
        now[0] += 5
        assert workers.topics() == names[:3]
        _fill(s, names[1], 5)
        now[0] += 5
        assert workers.topics() == names[:4]
        now[0] += 40
        assert workers.topics() == names[1:4]
        assert request_generations(s) == names
        now[0] += 60
        assert workers.topics() == names[1:4]
        assert request_generations(s) == names[1:4]
    finally:
        consumer.close()
