"""The search requests topic in generations on the real broker (shopvec.kafka.generations):
searches through a real query worker go on being answered while the topic is replaced again
and again, hostile requests on a later generation are refused as on the first, and a retired
generation is deleted from the broker."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from shopvec.client import SearchClient
from shopvec.indexing.reindex import topic_size
from shopvec.kafka.config import common_config, consumer_config, producer_config
from shopvec.kafka.generations import RequestTopics, generation_topic, request_generations
from shopvec.runtime import build_query_worker
from shopvec.settings import Settings
from tests.integration.conftest import running
from tests.integration.test_end_to_end import read_dead_letters
from tests.integration.test_hostile_input import MB, _large_client

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


def test_hostile_requests_on_a_later_generation_are_refused_and_the_worker_stays_up(
    settings, encoder
) -> None:
    s = _large_client(_limited(settings, 2))
    s = s.model_copy(update={"query": s.query.model_copy(update={"max_request_bytes": MB})})
    query, _ = build_query_worker(s, encoder)
    products_before = topic_size(s, s.topics.products)
    with running(query.run, query.ready), SearchClient(s, timeout_s=60) as client:
        for i in range(12):
            assert client.search(f"shirt {i}").error is None
            time.sleep(0.1)
        current = request_generations(s)[-2]  # the newest is the standby
        assert current != s.topics.search_requests
        producer = Producer(common_config(s))
        reply_here = {"reply_topic": client.reply_topic}
        big = {"request_id": "big", "text": "x" * (3 * MB), **reply_here}
        producer.produce(current, value=json.dumps(big).encode())  # refused at the door
        producer.produce(current, value=b"{oops")
        evil = {"request_id": "evil", "text": "shirt", "reply_topic": s.topics.products}
        producer.produce(current, value=json.dumps(evil).encode())
        producer.flush(30)
        dead = read_dead_letters(s, 3, timeout_s=60)
        assert client.search("shirt after them").error is None
        assert query.health.ready()
    assert sorted(d.error_kind for d in dead) == ["forbidden_reply_topic", "not_json", "oversize"]
    assert all(d.topic == current for d in dead)
    assert topic_size(s, s.topics.products) == products_before


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
