"""The query worker's bookkeeping with in-memory stand-ins for the Kafka clients: it takes the
next batch without waiting for the broker to acknowledge the last one's replies, and stores a
batch's offsets only once all its replies are acknowledged, oldest batch first."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, cast

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaError, Producer

from schemas.search import SearchReply, SearchRequest
from shopvec.kafka.dead_letters import DeadLetterSink
from shopvec.metrics import QueryMetrics
from shopvec.search.service import SearchService
from shopvec.search.worker import QueryWorker

Callback = Callable[[KafkaError | None, Any], None]


class FakeMessage:
    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "requests"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        import time

        return TIMESTAMP_CREATE_TIME, int(time.time() * 1000)


class FakeProducer:
    """Holds each produced message's delivery callback until the test acknowledges it."""

    def __init__(self) -> None:
        self.unacknowledged: list[tuple[str, Callback | None]] = []
        self.flushes = 0

    def produce(self, topic: str, on_delivery: Callback | None = None, **_: Any) -> None:
        self.unacknowledged.append((topic, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        self.acknowledge(len(self.unacknowledged))
        return 0

    def acknowledge(self, n: int, *, first: int = 0, err: KafkaError | None = None) -> None:
        for topic, callback in self.unacknowledged[first : first + n]:
            if callback is not None:
                callback(err, FakeMessage(0, topic.encode()))
        del self.unacknowledged[first : first + n]


class FakeConsumer:
    def __init__(self) -> None:
        self.stored: list[int] = []

    def store_offsets(self, msg: FakeMessage) -> None:
        self.stored.append(msg.offset())


class EchoService:
    def search_many(
        self, requests: Sequence[SearchRequest], ages_ms: Sequence[float] | None = None
    ) -> list[SearchReply]:
        return [SearchReply(request_id=r.request_id) for r in requests]


def _worker() -> tuple[QueryWorker, FakeConsumer, FakeProducer]:
    consumer, producer = FakeConsumer(), FakeProducer()
    worker = QueryWorker(
        consumer=cast(Consumer, consumer),
        producer=cast(Producer, producer),
        topic="requests",
        default_reply_topic="replies",
        service=cast(SearchService, EchoService()),
        dead_letters=DeadLetterSink(cast(Producer, producer), "dead", "query"),
        metrics=QueryMetrics(),
    )
    return worker, consumer, producer


def _request(offset: int) -> FakeMessage:
    body = {"request_id": f"r{offset}", "text": "red dress", "reply_topic": "mine"}
    return FakeMessage(offset, json.dumps(body).encode())


def test_offsets_wait_for_the_replies_and_keep_their_order() -> None:
    worker, consumer, producer = _worker()
    worker._handle([_request(0), _request(1)])
    worker._handle([_request(2)])
    # Nothing acknowledged yet: the second batch was taken all the same, nothing stored.
    assert len(producer.unacknowledged) == 3 and consumer.stored == []

    producer.acknowledge(1, first=2)  # the second batch's reply
    worker._store_acknowledged()
    assert consumer.stored == []  # the first batch still waits, so the second does too

    producer.acknowledge(1)  # one of the first batch's two
    worker._store_acknowledged()
    assert consumer.stored == []

    producer.acknowledge(1)
    worker._store_acknowledged()
    assert consumer.stored == [0, 1, 2]
    assert producer.flushes == 0


def test_a_failed_reply_does_not_hold_the_offsets_back() -> None:
    worker, consumer, producer = _worker()
    worker._handle([_request(0)])
    producer.acknowledge(1, err=KafkaError(KafkaError._MSG_TIMED_OUT))
    worker._store_acknowledged()
    assert consumer.stored == [0]


def test_a_dead_letter_is_acknowledged_before_its_batch_moves_on() -> None:
    worker, consumer, producer = _worker()
    worker._handle([FakeMessage(0, b"{not json"), _request(1)])
    # The dead letter made the batch flush: everything in it is acknowledged and stored.
    assert producer.flushes == 1
    assert [topic for topic, _ in producer.unacknowledged] == []
    assert consumer.stored == [0, 1]
