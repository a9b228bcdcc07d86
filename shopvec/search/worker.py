"""The query worker's loop: consume a micro-batch of requests, answer each on its reply topic.

Requests in one poll are encoded together (one text batch, one image batch), which is where
concurrency pays on a CPU or GPU encoder. Replies carry the request id as the correlation id
header and as the key. A request that cannot be parsed gets an error reply when its reply topic
can be found (body or header), otherwise it goes to the dead-letter topic.

The loop does not wait for the broker to acknowledge a batch's replies before it takes the next
batch: a batch's offsets are stored once all its replies are acknowledged (or have failed for
good), batches in the order they were consumed. A worker killed meanwhile leaves those requests
to be answered again by whoever takes the partition. A dead letter is still acknowledged before
its batch moves on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from pydantic import ValidationError

from schemas.search import SearchError, SearchReply, SearchRequest
from schemas.wire import (
    HEADER_CONTENT_TYPE,
    HEADER_CORRELATION_ID,
    HEADER_REPLY_TOPIC,
    HEADER_SCHEMA_VERSION,
)
from shopvec.kafka.dead_letters import (
    DeadLetterSink,
    classify_validation_error,
    readable_validation_error,
)
from shopvec.kafka.loop import store_offsets
from shopvec.metrics import QueryMetrics
from shopvec.search.service import SearchService

__all__ = ["QueryWorker", "header"]

log = logging.getLogger(__name__)


def header(msg: Message, name: str) -> str | None:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    for key, value in pairs:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def _age_ms(msg: Message, now_ms: float) -> float:
    kind, stamp = msg.timestamp()
    return 0.0 if kind == TIMESTAMP_NOT_AVAILABLE else max(0.0, now_ms - stamp)


class _Batch:
    """One poll's messages, and how many of its replies the broker has yet to acknowledge."""

    __slots__ = ("msgs", "waiting")

    def __init__(self, msgs: list[Message]) -> None:
        self.msgs = msgs
        self.waiting = 0

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        self.waiting -= 1
        if err is not None:
            # The asker's timeout and retry cover a reply that never arrives.
            log.warning("reply to %s not delivered: %s", msg.topic(), err)


class QueryWorker:
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: Producer,
        topic: str,
        default_reply_topic: str,
        service: SearchService,
        dead_letters: DeadLetterSink,
        metrics: QueryMetrics,
        batch_size: int = 16,
        batch_wait_s: float = 0.002,
        max_request_age_s: float = 30.0,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._topic = topic
        self._default_reply = default_reply_topic
        self._service = service
        self._dead = dead_letters
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._max_age_ms = max_request_age_s * 1000
        self._unacknowledged: deque[_Batch] = deque()
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe([self._topic], on_assign=lambda c, p: self.ready.set())
        try:
            while not stop.is_set():
                # consume(n, t) waits for n messages or t seconds, whichever first: so wait for
                # one, then take what else is ready (plus batch_wait) to encode together.
                first = self._consumer.poll(0.25)
                if first is None:
                    self._producer.poll(0)
                    self._store_acknowledged()
                    continue
                msgs = [first]
                msgs += self._consumer.consume(self._batch_size - 1, self._batch_wait_s)
                good = []
                for msg in msgs:
                    err = msg.error()
                    if err is None:
                        good.append(msg)
                    elif err.fatal():
                        raise KafkaException(err)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer: %s", err)
                if good:
                    self._handle(good)
        finally:
            self._producer.flush(10)
            self._store_acknowledged()
            self._consumer.close()

    def _store_acknowledged(self) -> None:
        """Stores the offsets of the batches whose replies are all acknowledged, oldest first,
        stopping at the first that still waits: an offset never moves back."""
        while self._unacknowledged and self._unacknowledged[0].waiting <= 0:
            store_offsets(self._consumer, self._unacknowledged.popleft().msgs)

    def _handle(self, msgs: list[Message]) -> None:
        started = time.perf_counter()
        batch = _Batch(msgs)
        requests: list[tuple[Message, SearchRequest]] = []
        now_ms = time.time() * 1000
        for msg in msgs:
            kind, stamp = msg.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE and now_ms - stamp > self._max_age_ms:
                # The group starts new partitions at the earliest offset so that no request
                # is skipped in a rebalance; what its client has long given up on is dropped.
                self._metrics.expired.inc()
                continue
            try:
                requests.append((msg, SearchRequest.from_bytes(msg.value() or b"")))
            except ValidationError as exc:
                self._reject(msg, exc, batch)
        if requests:
            try:
                ages = [_age_ms(msg, now_ms) for msg, _ in requests]
                replies = self._service.search_many([r for _, r in requests], ages)
            except Exception as exc:  # the store or the encoder failed: say so to every asker
                log.exception("search batch failed")
                replies = [
                    SearchReply(
                        request_id=r.request_id,
                        error=SearchError(kind="internal", message=f"search failed: {exc}"),
                    )
                    for _, r in requests
                ]
            for (msg, request), reply in zip(requests, replies, strict=True):
                topic = request.reply_topic or header(msg, HEADER_REPLY_TOPIC)
                self._reply(topic or self._default_reply, reply, batch)
                self._metrics.requests.labels(scenario=reply.scenario or "none").inc()
                if reply.error is not None:
                    self._metrics.errors.labels(kind=reply.error.kind).inc()
        self._unacknowledged.append(batch)
        self._producer.poll(0)
        self._dead.flush()
        self._store_acknowledged()
        self._metrics.latency_seconds.observe(time.perf_counter() - started)

    def _reject(self, msg: Message, exc: ValidationError, batch: _Batch) -> None:
        reply_topic, request_id = (
            header(msg, HEADER_REPLY_TOPIC),
            header(msg, HEADER_CORRELATION_ID),
        )
        try:
            body = json.loads(msg.value() or b"")
            if isinstance(body, dict):
                reply_topic = body.get("reply_topic") or reply_topic
                request_id = body.get("request_id") or request_id
        except ValueError:
            pass
        reason = readable_validation_error(exc)
        if isinstance(reply_topic, str) and reply_topic and request_id:
            self._reply(
                reply_topic,
                SearchReply(
                    request_id=str(request_id),
                    error=SearchError(kind="invalid_request", message=reason),
                ),
                batch,
            )
            self._metrics.errors.labels(kind="invalid_request").inc()
        else:
            self._dead.send(msg, classify_validation_error(exc), reason)
            self._metrics.dead_lettered.inc()

    def _reply(self, topic: str, reply: SearchReply, batch: _Batch) -> None:
        # Delivery callbacks run inside this thread's producer.poll, never before it.
        self._producer.produce(
            topic,
            key=reply.request_id.encode(),
            value=reply.to_bytes(),
            headers=[
                (HEADER_CORRELATION_ID, reply.request_id.encode()),
                (HEADER_CONTENT_TYPE, b"application/json"),
                (HEADER_SCHEMA_VERSION, str(reply.schema_version).encode()),
            ],
            on_delivery=batch.delivered,
        )
        batch.waiting += 1
