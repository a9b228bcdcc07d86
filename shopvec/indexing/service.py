"""The indexer's consume loop on confluent-kafka: at-least-once with idempotent effects.

An offset is stored only after the Milvus write for its message returned (or after its dead
letter was acknowledged), and the background commit only commits stored offsets. A kill at
any moment therefore replays at most the uncommitted batches, which the pipeline recognises by
version and writes no differently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from pydantic import ValidationError

from schemas.dead_letter import ErrorKind
from schemas.product import parse_product_event
from shopvec.indexing.pipeline import ProductEventT, ProductIndexer
from shopvec.kafka.dead_letters import DeadLetterSink
from shopvec.metrics import IndexerMetrics

__all__ = ["IndexerService", "classify_validation_error"]

log = logging.getLogger(__name__)


def classify_validation_error(exc: ValidationError) -> ErrorKind:
    kinds = {e["type"] for e in exc.errors()}
    return "not_json" if kinds & {"json_invalid", "json_type"} else "schema_violation"


def _readable(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class IndexerService:
    def __init__(
        self,
        *,
        consumer: Consumer,
        topic: str,
        indexer: ProductIndexer,
        dead_letters: DeadLetterSink,
        metrics: IndexerMetrics,
        batch_size: int = 32,
        batch_wait_s: float = 0.2,
        max_retry_s: float = 120.0,
        on_batch: Callable[[Any], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._indexer = indexer
        self._dead = dead_letters
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._max_retry_s = max_retry_s
        self._on_batch = on_batch
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe([self._topic], on_assign=lambda c, p: self.ready.set())
        try:
            while not stop.is_set():
                batch = self._next_batch(stop)
                if batch:
                    self._process(batch, stop)
        finally:
            # close() commits what was stored: the drain on SIGTERM.
            self._consumer.close()
            log.info("indexer consumer closed")

    def _next_batch(self, stop: threading.Event) -> list[Message]:
        batch: list[Message] = []
        deadline = time.monotonic() + self._batch_wait_s
        while len(batch) < self._batch_size and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 and batch:
                break
            timeout = max(remaining, 0.05) if batch else 0.5
            for msg in self._consumer.consume(self._batch_size - len(batch), timeout):
                err = msg.error()
                if err is None:
                    batch.append(msg)
                elif err.fatal():
                    raise KafkaException(err)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", err)
        return batch

    def _process(self, batch: list[Message], stop: threading.Event) -> None:
        m = self._metrics
        m.events_in.inc(len(batch))
        m.batch_size.observe(len(batch))
        events: list[ProductEventT] = []
        source: dict[int, Message] = {}
        purge: list[str] = []
        for msg in batch:
            value = msg.value()
            if value is None:
                # A tombstone on a compacted topic: the key is the product id.
                key = msg.key()
                if key:
                    purge.append(key.decode(errors="replace"))
                else:
                    self._dead_letter(msg, "schema_violation", "tombstone without a key")
                continue
            try:
                event = parse_product_event(value)
            except ValidationError as exc:
                self._dead_letter(msg, classify_validation_error(exc), _readable(exc))
                continue
            events.append(event)
            source[id(event)] = msg

        outcome = self._with_retries(lambda: self._indexer.apply(events), stop)
        if purge:
            self._with_retries(lambda: self._indexer.purge(purge), stop)
        for event, error in outcome.failures:
            kind = getattr(error, "kind", "unprocessable")
            self._dead_letter(source[id(event)], kind, f"product {event.id}: {error}")
        self._dead.flush()
        for msg in batch:
            self._consumer.store_offsets(msg)

        now_ms = time.time() * 1000
        for event_ms in outcome.written_event_ms:
            m.freshness_seconds.observe(max(0.0, (now_ms - event_ms) / 1000))
        m.written.inc(outcome.written)
        m.deleted.inc(outcome.deleted + len(purge))
        m.skipped_unchanged.inc(outcome.stale)
        m.reused.inc(outcome.reused)
        m.encoded_texts.inc(outcome.encoded_texts)
        m.encoded_images.inc(outcome.encoded_images)
        m.encode_seconds.observe(outcome.encode_seconds)
        if self._on_batch is not None:
            self._on_batch(outcome)

    def _dead_letter(self, msg: Message, kind: Any, reason: str) -> None:
        self._dead.send(msg, kind, reason)
        self._metrics.dead_lettered.labels(kind=kind).inc()

    def _with_retries(self, call: Callable[[], Any], stop: threading.Event) -> Any:
        """Transient failures (Milvus away, a timeout) are retried, never dead-lettered; past
        max_retry_s the error propagates and the process exits so the orchestrator restarts it,
        with the batch's offsets not stored."""
        delay, waited = 0.5, 0.0
        while True:
            try:
                return call()
            except Exception as exc:
                if waited >= self._max_retry_s or stop.is_set():
                    raise
                self._metrics.retries.inc()
                log.warning("transient failure, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 10.0)
