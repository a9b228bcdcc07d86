"""SearchClient: send a search request over Kafka and wait for the matching reply.

By default each client owns a private reply topic (created on open, deleted on close) and reads
it from the beginning, so no reply can be missed whatever the broker reports as the end of a
topic. A shared reply topic can be named instead; the client then reads from its end and keeps
only the replies whose correlation id it is waiting for.

A private reply topic is replaced after `Settings.reply_topic_records()` replies (by default
only on the embedded broker, whose fetches slow with every batch a partition holds): searches
sent from then on name a new topic, the client reads both, and the old one is deleted once
every search sent to it has been answered or given up (the client's timeout, or the age past
which query workers drop a request, whichever is longer). A caller that sends requests by other
means and waits with `expect` reads `reply_topic` for each request it sends.

Requests go to the current generation of the requests topic, which on the embedded broker is
replaced as it fills (shopvec.kafka.generations); the client learns of a new one from the
offsets the broker acknowledges and by asking every ten seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
import time
import uuid
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from schemas.search import SearchFilters, SearchReply, SearchRequest
from schemas.wire import HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID, HEADER_REPLY_TOPIC
from shopvec.kafka.admin import create_topic, delete_topics
from shopvec.kafka.config import producer_config, reply_reader_config
from shopvec.kafka.dead_letters import readable_validation_error
from shopvec.kafka.generations import RequestTopic, listing
from shopvec.kafka.loop import header
from shopvec.settings import Settings

__all__ = [
    "AsyncSearchClient",
    "SearchClient",
    "SearchNotSent",
    "SearchReplyInvalid",
    "SearchTimeout",
]

log = logging.getLogger(__name__)


REQUEST_QUEUE_KB = 64 * 1024
"""What a client's producer holds of requests the broker has not taken yet (librdkafka's
default is 1 GiB: photo searches queued while the broker was away grew an HTTP server past its
memory limit); a search beyond it fails at once (SearchNotSent)."""


class SearchTimeout(TimeoutError):
    pass


class SearchNotSent(ConnectionError):
    """The broker did not take the request (unreachable, the topic missing, the request too
    large): no reply will come. `too_large` when its size was the reason."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class SearchReplyInvalid(ValueError):
    """A reply came under the search's correlation id that does not match the reply contract
    (a query worker of another version, a broken one, or something else writing into the reply
    topic): the search fails at once with the reason rather than waiting out its timeout."""


def _not_sent(error: KafkaError, what: str) -> SearchNotSent:
    return SearchNotSent(
        f"{what}: {error.str()}", too_large=error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    )


def _reason(exc: ValueError) -> str:
    why = readable_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
    return f"the reply does not match the contract: {why}"[:500]


class SearchClient:
    def __init__(
        self,
        settings: Settings,
        *,
        reply_topic: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 0,
    ) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._retries = retries
        self._private = reply_topic is None
        self._pending: dict[str, Future[SearchReply]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rotate_after = settings.reply_topic_records() if self._private else 0
        self._retire_after_s = max(timeout_s, settings.query.max_request_age_s) + 5.0
        self._read_on_current = 0
        self._retiring: list[tuple[str, float]] = []
        """Replaced reply topics, with when they stopped being named in requests."""
        self.reply_topic = reply_topic or self._new_reply_topic()
        # A request older than the workers' age limit is dropped unanswered: no use keeping it
        # queued longer while the broker is away, nor more than a bounded queue of them.
        give_up_ms = int(1000 * max(timeout_s, settings.query.max_request_age_s))
        self._producer = Producer(
            producer_config(
                settings,
                **{
                    "linger.ms": 0,
                    "message.timeout.ms": give_up_ms,
                    "queue.buffering.max.kbytes": REQUEST_QUEUE_KB,
                },
            )
        )
        self._requests = RequestTopic(settings, listing(self._producer))
        self._consumer = Consumer(reply_reader_config(settings))
        self._assign()
        self._reader = threading.Thread(target=self._read, name="search-replies", daemon=True)
        self._reader.start()

    def _new_reply_topic(self) -> str:
        name = f"{self._settings.topics.search_replies}.{uuid.uuid4().hex}"
        # One day of retention is plenty for a reply; the topic is deleted anyway.
        create_topic(self._settings, name, 1, {"retention.ms": "86400000"})
        return name

    def _assign(self) -> None:
        if self._private:
            self._consumer.assign([TopicPartition(self.reply_topic, 0, OFFSET_BEGINNING)])
            return
        meta = self._consumer.list_topics(self.reply_topic, timeout=10)
        partitions = meta.topics[self.reply_topic].partitions
        self._consumer.assign([TopicPartition(self.reply_topic, p, OFFSET_END) for p in partitions])

    def _read(self) -> None:
        while not self._stop.is_set():
            # The requests' delivery reports (a request the broker did not take fails its
            # caller at once) run here, as do the replies.
            self._producer.poll(0)
            msg = self._consumer.poll(0.1)
            if self._retiring:
                self._retire()
            if msg is None or msg.error() is not None:
                continue
            if self._rotate_after and msg.topic() == self.reply_topic:
                self._read_on_current += 1
                if self._read_on_current >= self._rotate_after:
                    self._rotate()
            try:
                reply = SearchReply.from_bytes(msg.value() or b"")
            except ValueError as exc:
                log.warning("unreadable reply on %s@%s", msg.partition(), msg.offset())
                self._answer(header(msg, HEADER_CORRELATION_ID), SearchReplyInvalid(_reason(exc)))
                continue
            self._answer(reply.request_id, reply)

    def _answer(self, request_id: str | None, outcome: SearchReply | BaseException) -> None:
        """Resolves the future waiting under request_id, if any: its reply, or why none will
        come."""
        if request_id is None:
            return
        with self._lock:
            future = self._pending.pop(request_id, None)
        if future is None:
            return
        # An asyncio caller that timed out may have cancelled it meanwhile.
        with contextlib.suppress(InvalidStateError):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _rotate(self) -> None:
        """From now on requests name a new reply topic; the current one retires."""
        self._read_on_current = 0
        try:
            new = self._new_reply_topic()
        except Exception as exc:  # searches go on through the current topic; tried again later
            log.warning("could not create a new reply topic: %s", exc)
            return
        self._consumer.incremental_assign([TopicPartition(new, 0, OFFSET_BEGINNING)])
        old, self.reply_topic = self.reply_topic, new
        self._retiring.append((old, time.monotonic()))
        log.info("replies now come on %s; %s retires", new, old)

    def _retire(self) -> None:
        """Deletes the retired reply topics that no search can still be answered on."""
        now = time.monotonic()
        due = [name for name, since in self._retiring if now - since >= self._retire_after_s]
        if not due:
            return
        self._retiring = [(n, since) for n, since in self._retiring if n not in due]
        self._consumer.incremental_unassign([TopicPartition(name, 0) for name in due])
        self._delete(due)

    def _delete(self, names: list[str]) -> None:
        try:
            delete_topics(self._settings, names, timeout_s=10)
        except Exception as exc:  # the topics expire on their own; nothing may fail for this
            log.warning("could not delete reply topics %s: %s", names, exc)

    def expect(self, request_id: str) -> Future[SearchReply]:
        """A future for the reply to request_id on this client's reply topic, for a request
        sent by other means (another producer, another language)."""
        future: Future[SearchReply] = Future()
        with self._lock:
            if request_id in self._pending:
                # Its reply would answer one of the two; the other would wait in vain.
                raise ValueError(f"a search with id {request_id!r} is already waiting")
            self._pending[request_id] = future
        return future

    @property
    def reading(self) -> bool:
        """Whether the thread that reads the replies (and the requests' delivery reports) is
        alive: without it no search is answered."""
        return self._reader.is_alive()

    @property
    def waiting(self) -> int:
        """Requests whose replies this client still waits for."""
        with self._lock:
            return len(self._pending)

    def forget(self, request_id: str) -> None:
        """Stops waiting for request_id's reply (a caller that gave up on it): its future is
        no longer kept, and a late reply is dropped."""
        with self._lock:
            self._pending.pop(request_id, None)

    def send(self, request: SearchRequest) -> Future[SearchReply]:
        """Sends without waiting; the future resolves with the reply. A caller that stops
        waiting calls `forget`."""
        future = self.expect(request.request_id)
        try:
            self._send(request)
        except BaseException:
            self.forget(request.request_id)
            raise
        return future

    def _send(self, request: SearchRequest) -> None:
        if request.reply_topic is None:
            request = request.model_copy(update={"reply_topic": self.reply_topic})
        self._produce(
            self._requests.name(),
            key=request.request_id.encode(),
            value=request.to_bytes(),
            headers=[
                (HEADER_CORRELATION_ID, request.request_id.encode()),
                (HEADER_REPLY_TOPIC, (request.reply_topic or "").encode()),
                (HEADER_CONTENT_TYPE, b"application/json"),
            ],
            on_delivery=self._stored,
        )
        # Not flushed: the producer sends at once (no linger), and a request the broker does
        # not take fails its future from the delivery report. Waiting here held a thread of
        # each caller for the whole timeout while the broker was away.
        self._producer.poll(0)

    def _produce(self, topic: str, **kwargs: Any) -> None:
        try:
            self._producer.produce(topic, **kwargs)
        except KafkaException as exc:
            raise _not_sent(exc.args[0], "not sent") from exc
        except BufferError as exc:
            raise SearchNotSent(f"not sent: {exc}") from exc

    def _stored(self, err: KafkaError | None, msg: Message) -> None:
        offset = msg.offset()
        if err is None and offset is not None:
            self._requests.acknowledged(msg.topic() or "", offset)
            return
        if err is None:
            return
        request_id = (msg.key() or b"").decode(errors="replace")
        self._answer(request_id, _not_sent(err, "the broker did not take the search"))

    def request(
        self, request: SearchRequest, timeout_s: float | None = None, retries: int | None = None
    ) -> SearchReply:
        """Sends and waits; on a timeout sends the same request again (same id: a late reply
        to the first send answers it just as well), `retries` times."""
        timeout = timeout_s or self._timeout_s
        attempts = 1 + (self._retries if retries is None else retries)
        future = self.send(request)
        try:
            for attempt in range(attempts):
                if attempt:
                    self._send(request)
                try:
                    return future.result(timeout / attempts)
                except FutureTimeout:
                    continue
        finally:
            self.forget(request.request_id)
        raise SearchTimeout(f"no reply to {request.request_id} within {timeout}s")

    def build_request(
        self,
        text: str | None = None,
        *,
        image: bytes | str | Path | None = None,
        image_url: str | None = None,
        top_k: int = 10,
        offset: int = 0,
        filters: SearchFilters | dict[str, Any] | None = None,
        scenario: str = "auto",
        ranker: str = "fused",
        user_id: str | None = None,
        like_product_id: str | None = None,
        explain: bool = False,
        deadline_ms: int | None = None,
    ) -> SearchRequest:
        if isinstance(image, str | Path):
            image = Path(image).read_bytes()
        body: dict[str, Any] = {
            "request_id": uuid.uuid4().hex,
            "text": text,
            "image_base64": base64.b64encode(image).decode() if image else None,
            "image_url": image_url,
            "top_k": top_k,
            "offset": offset,
            "filters": filters,
            "scenario": scenario,
            "user_id": user_id,
            "explain": explain,
        }
        # Newer request fields are only sent when used, so older workers keep accepting.
        if ranker != "fused":
            body["ranker"] = ranker
        if like_product_id is not None:
            body["like_product_id"] = like_product_id
        if deadline_ms is not None:
            body["deadline_ms"] = deadline_ms
        return SearchRequest.model_validate(body)

    def search(
        self, text: str | None = None, *, timeout_s: float | None = None, **fields: Any
    ) -> SearchReply:
        """Keyword arguments as for build_request: image, image_url, top_k, offset, filters,
        scenario, ranker, user_id, like_product_id, explain, deadline_ms."""
        return self.request(self.build_request(text, **fields), timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=5)
        self._consumer.close()
        self._producer.flush(5)
        if self._private:
            self._delete([self.reply_topic, *(name for name, _ in self._retiring)])

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSearchClient:
    """The same client for asyncio code: many searches in flight from one event loop.

    async with AsyncSearchClient(settings) as client:
        replies = await asyncio.gather(*(client.search(q) for q in queries))
    """

    def __init__(self, settings: Settings, **options: Any) -> None:
        self._options = options
        self._settings = settings
        self._client: SearchClient | None = None

    async def __aenter__(self) -> AsyncSearchClient:
        # Creating the reply topic is a blocking admin call: keep it off the event loop.
        self._client = await asyncio.to_thread(SearchClient, self._settings, **self._options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    async def request(self, request: SearchRequest, timeout_s: float | None = None) -> SearchReply:
        assert self._client is not None, "use `async with AsyncSearchClient(...)`"
        client = self._client
        timeout = timeout_s or client._timeout_s
        attempts = 1 + client._retries
        # As SearchClient.request: one future, the request sent again under the same id.
        waiting = asyncio.wrap_future(await asyncio.to_thread(client.send, request))
        try:
            for attempt in range(attempts):
                if attempt:
                    await asyncio.to_thread(client._send, request)
                done, _ = await asyncio.wait({waiting}, timeout=timeout / attempts)
                if done:
                    return waiting.result()
        finally:
            if not waiting.done():
                waiting.cancel()
            client.forget(request.request_id)
        raise SearchTimeout(f"no reply to {request.request_id} within {timeout}s")

    def build_request(self, text: str | None = None, **fields: Any) -> SearchRequest:
        assert self._client is not None, "use `async with AsyncSearchClient(...)`"
        return self._client.build_request(text, **fields)

    async def search(
        self, text: str | None = None, *, timeout_s: float | None = None, **fields: Any
    ) -> SearchReply:
        return await self.request(self.build_request(text, **fields), timeout_s)
