"""A search client's own reply topic is replaced after a number of replies and the old one
deleted once no search can still be answered on it; searches in flight across the change get
their replies; a reply that fails the contract fails its search at once. The tests answer the
requests themselves, as a query worker would."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient

from schemas.search import SearchReply, SearchRequest
from schemas.wire import HEADER_CORRELATION_ID
from shopvec.client import SearchClient, SearchReplyInvalid
from shopvec.http import KafkaBackend, create_app
from shopvec.kafka.config import admin_config, consumer_config, producer_config
from shopvec.settings import Settings

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def responding(s: Settings, answer: Callable[[SearchRequest], bytes]) -> Iterator[None]:
    """In the query workers' place: answers each search request with answer(request), on the
    request's reply topic under its correlation id."""
    stop, assigned = threading.Event(), threading.Event()
    consumer = Consumer(consumer_config(s, f"responder-{uuid.uuid4().hex}"))
    consumer.subscribe([s.topics.search_requests])
    producer = Producer(producer_config(s, **{"linger.ms": 0}))

    def respond() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if consumer.assignment():
                assigned.set()
            if msg is None or msg.error() is not None:
                continue
            request = SearchRequest.from_bytes(msg.value() or b"")
            assert request.reply_topic is not None
            producer.produce(
                request.reply_topic,
                answer(request),
                key=request.request_id.encode(),
                headers=[(HEADER_CORRELATION_ID, request.request_id.encode())],
            )
            producer.flush(5)

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    try:
        assert assigned.wait(30), "the responder was given no partitions"
        yield
    finally:
        stop.set()
        thread.join(10)
        consumer.close()


@pytest.fixture
def answered(settings: Settings) -> Iterator[tuple[Settings, list[str]]]:
    """Settings whose clients replace their reply topic every 5 replies, and the reply topic
    of every request answered so far."""
    s = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"reply_topic_records": 5}),
            "query": settings.query.model_copy(update={"max_request_age_s": 1.0}),
        }
    )
    seen: list[str] = []

    def answer(request: SearchRequest) -> bytes:
        seen.append(request.reply_topic or "")
        return SearchReply(request_id=request.request_id, results=[], took_ms=0.0).to_bytes()

    with responding(s, answer):
        yield s, seen


def _topics(s: Settings) -> set[str]:
    return set(AdminClient(admin_config(s)).list_topics(timeout=10).topics)


def test_reply_topic_is_replaced_and_the_old_one_deleted(answered, wait_for) -> None:
    s, seen = answered
    with SearchClient(s, timeout_s=5) as client:
        first = client.reply_topic
        for i in range(12):
            assert client.search(f"q{i}").request_id
        # 5 replies each on the first two topics, the rest on the third.
        topics = list(dict.fromkeys(seen))
        assert len(topics) == 3 and topics[0] == first and client.reply_topic == topics[2]
        assert [seen.count(t) for t in topics] == [5, 5, 2]
        # Deleted once no search sent to them can be answered: the client's timeout (5 s) or
        # the workers' request age (1 s), whichever is longer, and 5 s more.
        wait_for(lambda: not {topics[0], topics[1]} & _topics(s), 30, "old topics deleted")
        assert topics[2] in _topics(s)
    assert topics[2] not in _topics(s)


def test_searches_in_flight_across_a_change_get_their_replies(answered) -> None:
    s, seen = answered
    with SearchClient(s, timeout_s=30) as client:
        futures = [client.send(client.build_request(f"q{i}")) for i in range(8)]
        replies = [f.result(30) for f in futures]
        assert len(set(r.request_id for r in replies)) == 8
        changed = client.reply_topic
        assert changed != seen[0]  # the fifth reply replaced the topic
        more = [client.send(client.build_request(f"r{i}")) for i in range(8)]
        assert all(f.result(30).error is None for f in more)
        assert set(seen[8:]) <= {changed, client.reply_topic}


@pytest.fixture
def broken_replies(settings: Settings) -> Iterator[Settings]:
    """A responder whose replies carry NaN for a score: a broken worker's, which no strict
    reader takes."""

    def answer(request: SearchRequest) -> bytes:
        body = {"request_id": request.request_id, "results": [{"product_id": "a", "rank": 1}]}
        return json.dumps(body).replace('"rank"', '"score": NaN, "rank"').encode()

    with responding(settings, answer):
        yield settings


def test_a_reply_that_fails_the_contract_fails_its_search_at_once(broken_replies) -> None:
    s = broken_replies
    with SearchClient(s, timeout_s=30) as client:
        started = time.monotonic()
        with pytest.raises(SearchReplyInvalid, match="score"):
            client.search("red dress")
        assert time.monotonic() - started < 10  # not the timeout
        assert client.waiting == 0
    # Through the HTTP API: 502 with the reason, not a wait for its timeout.
    with TestClient(create_app(s, KafkaBackend(s)), raise_server_exceptions=False) as http:
        response = http.post("/v1/search", json={"text": "red dress"})
    assert response.status_code == 502, response.text
    assert "does not match the contract" in response.json()["error"]["message"]
