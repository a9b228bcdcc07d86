"""The indexer's consume loop on confluent-kafka: at-least-once with idempotent effects.

Three stages run at once on their own threads, so the encoder is never waiting:

    consumer thread: poll, validate, prepare (stored versions, photos fetched and decoded)
    encoder thread:  encode and fuse
    writer thread:   upsert into Milvus (transient failures retried with backoff)

Batches flow through bounded queues in order. The consumer thread stores a batch's offsets only
after its Milvus write returned and its dead letters were acknowledged; the background commit
commits only stored offsets. With too many batches in flight it pauses its partitions and keeps
polling (so the group keeps it), then resumes once the writer drains. A kill at any moment
replays at most the uncommitted batches, which the pipeline recognises by version and writes
no differently, without encoding them again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from schemas.dead_letter import ErrorKind
from schemas.product import parse_product_event
from shopvec.indexing.pipeline import IndexOutcome, Prepared, ProductEventT, ProductIndexer
from shopvec.kafka.dead_letters import (
    DeadLetterSink,
    classify_validation_error,
    readable_validation_error,
)
from shopvec.kafka.loop import next_batch, store_offsets, with_retries
from shopvec.metrics import IndexerMetrics
from shopvec.store.base import StoredState

__all__ = ["IndexerService"]

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _Batch:
    seq: int
    messages: list[Message]
    dead: list[tuple[Message, ErrorKind, str]] = field(default_factory=list)
    source: dict[int, Message] = field(default_factory=dict)
    prepared: Prepared | None = None
    outcome: IndexOutcome | None = None
    error: BaseException | None = None


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
        max_in_flight: int = 3,
        max_retry_s: float = 120.0,
        flush_rows: int = 5000,
        flush_interval_s: float = 30.0,
        on_batch: Callable[[IndexOutcome], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._indexer = indexer
        self._dead = dead_letters
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._max_in_flight = max_in_flight
        self._max_retry_s = max_retry_s
        self._on_batch = on_batch
        self._flush_rows = flush_rows
        self._flush_interval_s = flush_interval_s
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self.ready = threading.Event()
        # Unbounded queues: the bound is max_in_flight, enforced by pausing the partitions.
        self._to_encode: queue.Queue[Any] = queue.Queue()
        self._to_write: queue.Queue[Any] = queue.Queue()
        self._done: queue.Queue[_Batch] = queue.Queue()
        self._in_flight: list[_Batch] = []
        self._pending: dict[str, tuple[int, StoredState | None]] = {}
        self._pending_lock = threading.Lock()
        self._paused = False
        self._seq = 0
        self._stop = threading.Event()
        self._assigned: set[int] = set()

    def assigned_partitions(self) -> list[int]:
        """Safe from any thread: kept by the rebalance callbacks, since the consumer's own
        assignment() waits for the thread that is polling."""
        return sorted(self._assigned)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {tp.partition for tp in partitions}
        self.ready.set()

    # -- the consumer thread ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        threads = [
            threading.Thread(target=self._encode_loop, name="indexer-encode", daemon=True),
            threading.Thread(target=self._write_loop, name="indexer-write", daemon=True),
        ]
        for t in threads:
            t.start()
        self._consumer.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not stop.is_set():
                self._complete_done(block=False)
                self._backpressure()
                batch = next_batch(self._consumer, self._batch_size, self._batch_wait_s, stop)
                if batch:
                    self._submit(batch)
            # SIGTERM: finish what is in flight, store its offsets; close() commits them.
            self._drain()
        finally:
            self._to_encode.put(_STOP)
            for t in threads:
                t.join(timeout=30)
            self._consumer.close()
            log.info("indexer consumer closed")

    def _submit(self, messages: list[Message]) -> None:
        self._seq += 1
        batch = _Batch(self._seq, messages)
        self._metrics.events_in.inc(len(messages))
        self._metrics.batch_size.observe(len(messages))
        events: list[ProductEventT] = []
        tombstoned: dict[str, int] = {}
        for position, msg in enumerate(messages):
            value = msg.value()
            if value is None:
                # A tombstone on a compacted topic: the key is the product id.
                key = msg.key()
                if key:
                    tombstoned[key.decode(errors="replace")] = position
                else:
                    batch.dead.append((msg, "schema_violation", "tombstone without a key"))
                continue
            try:
                event = parse_product_event(value)
            except ValidationError as exc:
                batch.dead.append(
                    (msg, classify_validation_error(exc), readable_validation_error(exc))
                )
                continue
            events.append(event)
            batch.source[id(event)] = msg
        if tombstoned:
            # Only what came after a product's tombstone survives it.
            where = {id(m): i for i, m in enumerate(messages)}
            events = [
                e
                for e in events
                if e.id not in tombstoned or where[id(batch.source[id(e)])] > tombstoned[e.id]
            ]
        with self._pending_lock:
            pending = {k: v for k, (_, v) in self._pending.items()}
        batch.prepared = self._retrying(
            lambda: self._indexer.prepare(events, purge=list(tombstoned), pending=pending)
        )
        with self._pending_lock:
            for pid in batch.prepared.purge:
                self._pending[pid] = (batch.seq, None)
            for pid, state in batch.prepared.states.items():
                self._pending[pid] = (batch.seq, state)
        self._in_flight.append(batch)
        self._to_encode.put(batch)

    def _backpressure(self) -> None:
        assignment = self._consumer.assignment()
        if not self._paused and len(self._in_flight) >= self._max_in_flight:
            self._consumer.pause(assignment)
            self._paused = True
            # Wait for the writer rather than spin; poll() below keeps the group membership.
            self._complete_done(block=True, timeout=0.5)
        if self._paused and len(self._in_flight) < self._max_in_flight:
            self._consumer.resume(assignment)
            self._paused = False

    def _complete_done(self, *, block: bool, timeout: float = 0.0) -> None:
        while True:
            try:
                batch = self._done.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return
            block = False
            if batch.error is not None:
                raise batch.error
            self._complete(batch)

    def _complete(self, batch: _Batch) -> None:
        assert self._in_flight and self._in_flight[0] is batch, "batches complete in order"
        self._in_flight.pop(0)
        outcome = batch.outcome or IndexOutcome()
        for event, error in outcome.failures:
            kind: ErrorKind = getattr(error, "kind", "unprocessable")
            batch.dead.append((batch.source[id(event)], kind, f"product {event.id}: {error}"))
        for msg, kind, reason in batch.dead:
            self._dead.send(msg, kind, reason)
            self._metrics.dead_lettered.labels(kind=kind).inc()
        self._dead.flush()
        store_offsets(self._consumer, batch.messages)
        with self._pending_lock:
            for pid, (seq, _) in list(self._pending.items()):
                if seq == batch.seq:
                    del self._pending[pid]
        self._record(outcome)

    def _record(self, outcome: IndexOutcome) -> None:
        m = self._metrics
        now_ms = time.time() * 1000
        for event_ms in outcome.written_event_ms:
            m.freshness_seconds.observe(max(0.0, (now_ms - event_ms) / 1000))
        m.written.inc(outcome.written)
        m.deleted.inc(outcome.deleted)
        m.skipped_unchanged.inc(outcome.stale)
        m.reused.inc(outcome.reused)
        m.encoded_texts.inc(outcome.encoded_texts)
        m.encoded_images.inc(outcome.encoded_images)
        m.encode_seconds.observe(outcome.encode_seconds)
        if self._on_batch is not None:
            self._on_batch(outcome)

    def _drain(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._complete_done(block=True, timeout=0.5)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish and store what is in flight while the partitions are still ours, then commit,
        # so the next owner starts after it instead of encoding it again.
        self._assigned -= {tp.partition for tp in partitions}
        self._drain()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may already own them, so nothing is committed.
        self._assigned -= {tp.partition for tp in partitions}
        log.warning("partitions lost: %s", [tp.partition for tp in partitions])

    # -- encoder and writer threads -----------------------------------------------------------

    def _encode_loop(self) -> None:
        while True:
            batch = self._to_encode.get()
            if batch is _STOP:
                self._to_write.put(_STOP)
                return
            try:
                if batch.prepared is not None and batch.error is None:
                    self._indexer.encode(batch.prepared)
            except BaseException as exc:
                batch.error = exc
            self._to_write.put(batch)

    def _write_loop(self) -> None:
        while True:
            batch = self._to_write.get()
            if batch is _STOP:
                return
            if batch.error is None and batch.prepared is not None:
                prepared: Prepared = batch.prepared
                try:
                    batch.outcome = self._retrying(partial(self._indexer.write, prepared))
                    self._unflushed += batch.outcome.written
                except BaseException as exc:
                    batch.error = exc
            self._done.put(batch)
            # After the batch is handed on: a written row is durable and found without a flush
            # (the flush seals rows into indexed segments), so its offset need not wait for it.
            if batch.error is None and batch.prepared is not None:
                try:
                    self._maybe_flush()
                except BaseException:
                    log.exception("flushing the store failed; will try again after a later batch")

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self._flush_interval_s
        if self._unflushed and (self._unflushed >= self._flush_rows or due):
            self._retrying(self._indexer.flush)
            self._unflushed, self._last_flush = 0, time.monotonic()

    def _retrying(self, call: Callable[[], Any]) -> Any:
        return with_retries(
            call, self._stop, max_retry_s=self._max_retry_s, on_retry=self._metrics.retries.inc
        )
