"""The query worker's logic, as a handler of the stream runtime: answer each request of a
micro-batch on its reply topic.

Requests in one poll are encoded together (one text batch, one image batch), which is where
concurrency pays on a CPU or GPU encoder. Replies carry the request id as the correlation id
header and as the key; a request without a request_id is answered under its correlation-id
header. A request that cannot be parsed gets an error reply when its reply topic can be found
(body or header), otherwise it goes to the dead-letter topic.

A reply topic is the client's choice, so it is checked before anything is written: it must
match the configured patterns and exist already. A request naming any other topic gets no
reply; it is dead-lettered as forbidden_reply_topic.

A batch is finished once the broker has acknowledged all its replies (or failed them for
good: the asker's timeout and retry cover a reply that never arrives); the runtime stores
offsets batch by batch in consumption order, without waiting for one batch's replies before it
takes the next.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from pydantic import ValidationError

from schemas.dead_letter import ErrorKind
from schemas.search import SearchError, SearchReply, SearchRequest
from schemas.wire import (
    HEADER_CONTENT_TYPE,
    HEADER_CORRELATION_ID,
    HEADER_REPLY_TOPIC,
    HEADER_SCHEMA_VERSION,
)
from shopvec.kafka.batch import Batch
from shopvec.kafka.dead_letters import classify_validation_error, readable_validation_error
from shopvec.kafka.loop import header
from shopvec.kafka.topics import TopicGuard
from shopvec.metrics import QueryMetrics
from shopvec.search.service import SearchService

__all__ = ["QueryWorker"]

log = logging.getLogger(__name__)

GONE_CHECK_S = 1.0
"""How long replies wait unacknowledged before the worker asks whether their topics still
exist, and how often it asks."""
GONE_BUDGET_S = 0.5
"""How long one check may go on asking (one metadata request a topic); it resumes next time."""
GONE_RETRY_S = 30.0
"""When the broker could not be asked, how long until the next time."""


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None: not JSON, not an object, or nested deeper than
    Python's json reads (a body of 5,000 brackets raises RecursionError, not ValueError)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _age_ms(msg: Message, now_ms: float) -> float:
    kind, stamp = msg.timestamp()
    return 0.0 if kind == TIMESTAMP_NOT_AVAILABLE else max(0.0, now_ms - stamp)


@dataclass(frozen=True)
class _Invalid:
    error: ValidationError


@dataclass(frozen=True)
class _Expired:
    pass


Incoming = SearchRequest | _Invalid | _Expired


class _Replies:
    """A batch's replies the broker has yet to acknowledge; the batch is finished at none, when
    every topic its waiting replies go to is found deleted, or at its deadline: once its
    requests are too old to answer, a reply still unacknowledged is no use to its asker (who
    gave up), and a replay would drop the request as expired anyway. Waiting longer would hold
    every later batch's offsets behind it, and with them the worker (a reply topic deleted
    after the request named it is acknowledged only when the producer's own timeout runs
    out)."""

    __slots__ = ("batch", "deadline", "finished", "pending", "sealed", "sealed_at", "waiting")

    def __init__(self, batch: Batch[Incoming], deadline: float) -> None:
        self.batch = batch
        self.deadline = deadline
        self.waiting = 0
        self.pending: collections.Counter[str] = collections.Counter()
        """Unacknowledged replies by topic."""
        self.sealed = False
        self.sealed_at = 0.0
        self.finished = False

    def sent(self, topic: str) -> None:
        self.waiting += 1
        self.pending[topic] += 1

    def delivered(self, topic: str) -> Callable[[KafkaError | None, Message], None]:
        """The delivery callback of a reply to topic."""

        def report(err: KafkaError | None, msg: Message) -> None:
            self.waiting -= 1
            self.pending[topic] -= 1
            if self.pending[topic] <= 0:
                del self.pending[topic]
            if err is not None:
                log.warning("reply to %s not delivered: %s", topic, err)
            self._maybe_finish()

        return report

    def seal(self) -> None:
        self.sealed = True
        self.sealed_at = time.monotonic()
        self._maybe_finish()

    def give_up(self, why: str) -> None:
        log.warning(
            "%d replies unacknowledged %s; the batch goes on without them", self.waiting, why
        )
        self.finished = True
        self.batch.finish()

    def _maybe_finish(self) -> None:
        if self.sealed and self.waiting <= 0 and not self.finished:
            self.finished = True
            self.batch.finish()


class QueryWorker:
    def __init__(
        self,
        *,
        producer: Producer,
        default_reply_topic: str,
        reply_topics: TopicGuard,
        service: SearchService,
        metrics: QueryMetrics,
        max_request_age_s: float = 30.0,
    ) -> None:
        self._producer = producer
        self._default_reply = default_reply_topic
        self._reply_topics = reply_topics
        self._service = service
        self._metrics = metrics
        self._max_age_ms = max_request_age_s * 1000
        self._unacknowledged: deque[_Replies] = deque()
        """Sealed batches with replies still unacknowledged, oldest first."""
        self._next_gone_check = 0.0
        self._deleted: set[str] = set()
        """Reply topics found deleted, while replies to them wait."""

    # -- the runtime's handler ----------------------------------------------------------------

    def decode(self, msg: Message) -> Incoming:
        kind, stamp = msg.timestamp()
        if kind != TIMESTAMP_NOT_AVAILABLE and time.time() * 1000 - stamp > self._max_age_ms:
            # The group starts new partitions at the earliest offset so that no request is
            # skipped in a rebalance; what its client has long given up on is dropped.
            self._metrics.expired.inc()
            return _Expired()
        raw = msg.value() or b""
        try:
            return SearchRequest.from_bytes(raw)
        except ValidationError as exc:
            correlation = header(msg, HEADER_CORRELATION_ID)
            if correlation and any(e["loc"] == ("request_id",) for e in exc.errors()):
                return self._with_request_id(raw, correlation, exc)
            return _Invalid(exc)

    @staticmethod
    def _with_request_id(raw: bytes, correlation: str, exc: ValidationError) -> Incoming:
        """The request as its correlation-id header names it."""
        body = _json_object(raw)
        if body is None or "request_id" in body:
            return _Invalid(exc)
        try:
            return SearchRequest.model_validate({**body, "request_id": correlation})
        except ValidationError as again:
            return _Invalid(again)

    def submit(self, batch: Batch[Incoming]) -> None:
        started = time.perf_counter()
        # Measured from now, not from the requests' timestamps: the runtime drops a request
        # already older than the age limit when it decodes it.
        replies = _Replies(batch, time.monotonic() + self._max_age_ms / 1000)
        requests = [(m, r) for m, r in batch.items if isinstance(r, SearchRequest)]
        for msg, item in batch.items:
            if isinstance(item, _Invalid):
                self._reject(msg, item.error, replies)
        if requests:
            now_ms = time.time() * 1000
            try:
                answers = self._service.search_many(
                    [r for _, r in requests], [_age_ms(m, now_ms) for m, _ in requests]
                )
            except Exception as exc:  # the store or the encoder failed: say so to every asker
                log.exception("search batch failed")
                answers = [
                    SearchReply(
                        request_id=r.request_id,
                        error=SearchError(kind="internal", message=f"search failed: {exc}"),
                    )
                    for _, r in requests
                ]
            for (msg, request), reply in zip(requests, answers, strict=True):
                topic = request.reply_topic or header(msg, HEADER_REPLY_TOPIC)
                self._reply(msg, topic or self._default_reply, reply, replies)
                self._metrics.requests.labels(scenario=reply.scenario or "none").inc()
                if reply.error is not None:
                    self._metrics.errors.labels(kind=reply.error.kind).inc()
        self._producer.poll(0)
        replies.seal()
        if not replies.finished:
            self._unacknowledged.append(replies)
        self._metrics.latency_seconds.observe(time.perf_counter() - started)

    def tick(self) -> None:
        # Delivery reports (which finish batches) run inside poll, on this thread.
        self._producer.poll(0)
        now = time.monotonic()
        while self._unacknowledged and (
            self._unacknowledged[0].finished or self._unacknowledged[0].deadline <= now
        ):
            replies = self._unacknowledged.popleft()
            if not replies.finished:
                self._metrics.unacknowledged.inc(replies.waiting)
                replies.give_up("after their requests grew too old to answer")
        if now >= self._next_gone_check:
            self._give_up_on_deleted_topics()

    def _give_up_on_deleted_topics(self) -> None:
        """A batch whose waiting replies all go to topics deleted since (a client that closed
        with searches in flight deletes its reply topic) goes on without them: they would be
        acknowledged only when the producer's timeout ran out, and every later batch, at 64 the
        worker, would wait that long behind them. The next check comes GONE_CHECK_S after this
        one ends, or GONE_RETRY_S when the broker could not be asked."""
        wait = GONE_CHECK_S
        try:
            self._let_go_of_deleted(time.monotonic())
        except KafkaException as exc:
            log.warning("could not look up reply topics: %s", exc)
            wait = GONE_RETRY_S
        self._next_gone_check = time.monotonic() + wait

    def _let_go_of_deleted(self, started: float) -> None:
        """Offsets settle in order and the runtime's in-flight count drains from the oldest
        batch, so batches are taken oldest first, of those whose replies have waited
        GONE_CHECK_S; it stops at the first with a reply to a topic that still exists (its
        acknowledgement is late, not lost), or once it has asked for GONE_BUDGET_S. The topics
        found deleted are kept while replies to them wait, so the next check goes on from
        there."""
        waiting = {t for r in self._unacknowledged if not r.finished for t in r.pending}
        self._deleted &= waiting
        for replies in self._unacknowledged:
            if replies.finished:
                continue
            if started - replies.sealed_at < GONE_CHECK_S:
                return  # and every later batch is younger
            for topic in replies.pending:
                if topic in self._deleted:
                    continue
                if time.monotonic() - started >= GONE_BUDGET_S:
                    return
                if not self._reply_topics.gone(topic):
                    return
                self._deleted.add(topic)
            self._metrics.unacknowledged.inc(replies.waiting)
            topics = ", ".join(sorted(replies.pending))
            replies.give_up(f"to reply topics deleted since ({topics})")

    def close(self) -> None:
        self._producer.flush(10)

    # -- replies ------------------------------------------------------------------------------

    def _reject(self, msg: Message, exc: ValidationError, replies: _Replies) -> None:
        """An error reply where the request names where and under what id, else a dead letter.
        Never raises: a request that failed here would fail alone, and a run of them would stop
        the worker as a fault of the system."""
        reply_topic, request_id = (
            header(msg, HEADER_REPLY_TOPIC),
            header(msg, HEADER_CORRELATION_ID),
        )
        body = _json_object(msg.value() or b"")
        if body is not None:
            reply_topic = body.get("reply_topic") or reply_topic
            request_id = body.get("request_id") or request_id
        reason = readable_validation_error(exc)
        topic = reply_topic if isinstance(reply_topic, str) else ""
        reply = None
        # An id no reply can carry (a lone surrogate) leaves no reply to send.
        if topic and request_id:
            with contextlib.suppress(ValidationError):
                reply = SearchReply(
                    request_id=str(request_id)[:128],
                    error=SearchError(kind="invalid_request", message=reason),
                )
        if reply is None:
            replies.batch.reject(msg, classify_validation_error(exc), reason)
        elif self._reply(msg, topic, reply, replies):
            self._metrics.errors.labels(kind="invalid_request").inc()

    def _reply(self, msg: Message, topic: str, reply: SearchReply, replies: _Replies) -> bool:
        """False when nothing was written: the topic is refused (the request is dead-lettered)
        or the producer would not take the reply."""
        refusal = self._reply_topics.refusal(topic)
        if refusal is not None:
            kind: ErrorKind = "forbidden_reply_topic"
            replies.batch.reject(msg, kind, refusal)
            return False
        try:
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
                on_delivery=replies.delivered(topic),
            )
        except (BufferError, KafkaException) as exc:
            # The asker's timeout and retry cover it; the worker and the batch go on.
            log.warning("reply to %s not sent: %s", topic, exc)
            return False
        replies.sent(topic)
        return True
