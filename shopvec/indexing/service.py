"""The indexer's logic, as a handler of the stream runtime: at-least-once with idempotent
effects.

Three stages run at once on their own threads, so the encoder is never waiting:

    consumer thread:  (the runtime) poll and decode; here: prepare (stored versions, photos
                      fetched and decoded)
    encoder threads:  encode and fuse, encode_threads batches side by side
    writer thread:    upsert into Milvus (transient failures retried with backoff), batches
                      in the order they were prepared

Batches flow through queues; the writer puts back in order what the encoder threads finish out
of order, since a later batch may hold a newer version of a product. The runtime takes no more
while max_in_flight batches are unfinished, and stores a batch's offsets only after its Milvus
write returned and its dead letters were acknowledged. A kill at any moment replays at most the
uncommitted batches, which the pipeline recognises by version and writes no differently,
without encoding them again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import Message
from pydantic import TypeAdapter, ValidationError

from schemas.dead_letter import ErrorKind
from schemas.product import ProductId, ProductUpsert, parse_product_event
from shopvec.indexing.pipeline import IndexOutcome, Prepared, ProductEventT, ProductIndexer
from shopvec.kafka.batch import Batch, Reject
from shopvec.kafka.loop import Retrier
from shopvec.metrics import IndexerMetrics
from shopvec.store.base import StoredState
from shopvec.text import printable

__all__ = ["IndexerService", "Tombstone", "batch_weight", "max_in_flight"]

log = logging.getLogger(__name__)

IN_FLIGHT_BESIDE_ENCODING = 2
"""Batches between the consumer and the store at once besides those being encoded: one being
prepared, one written (or waiting for its turn)."""


def max_in_flight(encode_threads: int) -> int:
    """Unfinished batches beyond which the runtime takes no more: one a stage, and one for
    each encoder thread."""
    return IN_FLIGHT_BESIDE_ENCODING + encode_threads


_STOP = object()
_FLUSH = object()
"""Put on the writer's queue when the indexer has gone quiet: the writer flushes."""


def offset_ranges(messages: list[Message]) -> dict[str, list[int]]:
    """Per partition, the first and last offset among messages: what a log line needs to say
    which records a batch covered."""
    out: dict[str, list[int]] = {}
    for msg in messages:
        part, offset = str(msg.partition()), msg.offset()
        if offset is None:
            continue
        first, last = out.get(part, [offset, offset])
        out[part] = [min(first, offset), max(last, offset)]
    return out


@dataclass(frozen=True)
class Tombstone:
    """A record with no value on a compacted topic: its key is the product to remove."""

    id: str


Decoded = ProductEventT | Tombstone

_PRODUCT_ID: TypeAdapter[str] = TypeAdapter(ProductId)


def _tombstone_id(key: bytes) -> str:
    """The product a tombstone's key names, held to the ids the events may carry: the key
    becomes a term of the store's delete."""
    try:
        return _PRODUCT_ID.validate_python(key.decode())
    except (UnicodeDecodeError, ValidationError):
        shown = printable(key.decode(errors="replace"))[:140]
        raise Reject(
            "schema_violation", f"a tombstone's key {shown!r} is not a product id"
        ) from None


def batch_weight(item: Decoded) -> int:
    """An event's share of a batch (SHOPVEC_INDEXER__BATCH_SIZE): its photos, or one. A batch
    holds its decoded photos until they are encoded, and a product may carry 16: counted as
    one each, 160 products of 16 one-megapixel photos grew the indexer by 4.6 GB."""
    return max(1, len(item.images)) if isinstance(item, ProductUpsert) else 1


@dataclass
class _Work:
    batch: Batch[Decoded]
    seq: int
    prepared: Prepared
    error: BaseException | None = None


class IndexerService:
    def __init__(
        self,
        *,
        indexer: ProductIndexer,
        metrics: IndexerMetrics,
        retry: Retrier,
        flush_rows: int = 5000,
        flush_interval_s: float = 600.0,
        flush_quiet_s: float = 5.0,
        on_batch: Callable[[IndexOutcome], None] | None = None,
        encode_threads: int = 1,
    ) -> None:
        """Written rows are flushed (sealed into indexed segments) after flush_rows of them,
        after flush_interval_s, or once nothing has been written for flush_quiet_s: a flush
        starts index builds, which are best run when the indexer has nothing else to do.
        encode_threads: batches encoded at once, each on a thread of its own (the indexer's
        encoder must be safe to share between threads)."""
        if encode_threads < 1:
            raise ValueError("encode_threads must be at least 1")
        self._indexer = indexer
        self._encode_threads = encode_threads
        self._metrics = metrics
        self._retry = retry
        self._on_batch = on_batch
        self._flush_rows = flush_rows
        self._flush_interval_s = flush_interval_s
        self._flush_quiet_s = flush_quiet_s
        self._unflushed = 0
        self._last_flush = self._last_write = time.monotonic()
        self._flush_asked = False
        # Unbounded queues: the bound is the runtime's max_in_flight, enforced by pausing.
        self._to_encode: queue.Queue[Any] = queue.Queue()
        self._to_write: queue.Queue[Any] = queue.Queue()
        self._pending: dict[str, tuple[int, StoredState | None]] = {}
        self._pending_lock = threading.Lock()
        self._seq = 0
        self._threads: list[threading.Thread] = []
        self._next_write = 1
        self._encoded: dict[int, _Work] = {}
        """Batches encoded ahead of their turn to be written, by sequence number."""

    # -- the runtime's handler, on the consumer thread ----------------------------------------

    def decode(self, msg: Message) -> Decoded:
        """A record with no value is a tombstone, for the product its key names; an event's key,
        where it has one, is its product's id (the key decides the partition, and the topic's
        compaction keeps one record per key, so a record keyed apart from its body would be
        ordered and removed as another product's)."""
        self._metrics.events_in.inc()
        value, key = msg.value(), msg.key()
        if value is None:
            if not key:
                raise Reject("schema_violation", "tombstone without a key")
            return Tombstone(_tombstone_id(key))
        event = parse_product_event(value)
        if key is not None and key != event.id.encode():
            raise Reject(
                "schema_violation",
                f"the record's key {printable(key.decode(errors='replace'))[:140]!r} is not "
                f"its product's id {event.id!r}",
            )
        return event

    def submit(self, batch: Batch[Decoded]) -> None:
        assembled = time.time()
        if not self._threads:
            self._start()
        self._metrics.batch_size.observe(len(batch.items))
        tombstoned: dict[str, int] = {}
        events: list[tuple[int, ProductEventT]] = []
        for position, (_, item) in enumerate(batch.items):
            if isinstance(item, Tombstone):
                tombstoned[item.id] = position
            else:
                events.append((position, item))
        # Only what came after a product's tombstone survives it.
        keep = [e for at, e in events if at > tombstoned.get(e.id, -1)]
        with self._pending_lock:
            pending = {k: v for k, (_, v) in self._pending.items()}
        prepared = self._retry(
            lambda: self._indexer.prepare(keep, purge=list(tombstoned), pending=pending)
        )
        prepared.outcome.stages.update(assembled=assembled, prepared=time.time())
        # Numbered once prepared: the writer writes every number in turn, so each one numbered
        # must reach it.
        self._seq += 1
        with self._pending_lock:
            for pid in prepared.purge:
                self._pending[pid] = (self._seq, None)
            for pid, state in prepared.states.items():
                self._pending[pid] = (self._seq, state)
        self._to_encode.put(_Work(batch, self._seq, prepared))

    def tick(self) -> None:
        """On the consumer thread between polls: asks the writer to flush once the indexer has
        gone quiet (nothing in flight, nothing written for flush_quiet_s)."""
        if (
            not self._unflushed
            or self._flush_asked
            or time.monotonic() - self._last_write < self._flush_quiet_s
            or not self._to_encode.empty()
            or not self._to_write.empty()
        ):
            return
        with self._pending_lock:
            if self._pending:
                return
        self._flush_asked = True
        self._to_write.put(_FLUSH)

    def close(self) -> None:
        for _ in range(self._encode_threads):
            self._to_encode.put(_STOP)
        for t in self._threads:
            t.join(timeout=30)

    def _start(self) -> None:
        self._threads = [
            threading.Thread(target=self._encode_loop, name=f"indexer-encode-{i}", daemon=True)
            for i in range(self._encode_threads)
        ]
        self._threads.append(
            threading.Thread(target=self._write_loop, name="indexer-write", daemon=True)
        )
        for t in self._threads:
            t.start()

    # -- encoder and writer threads -----------------------------------------------------------

    def _encode_loop(self) -> None:
        while True:
            work = self._to_encode.get()
            if work is _STOP:
                self._to_write.put(_STOP)
                return
            stages = work.prepared.outcome.stages
            stages["encode_start"] = time.time()
            try:
                self._indexer.encode(work.prepared)
            except BaseException as exc:
                work.error = exc
            stages["encoded"] = time.time()
            self._to_write.put(work)

    def _write_loop(self) -> None:
        encoding = self._encode_threads
        while encoding:
            item = self._to_write.get()
            if item is _STOP:
                encoding -= 1
            elif item is _FLUSH:
                self._flush_asked = False
                if self._unflushed:
                    self._flush()
            else:
                self._encoded[item.seq] = item
                while self._next_write in self._encoded:
                    self._write(self._encoded.pop(self._next_write))
                    self._next_write += 1

    def _write(self, work: _Work) -> None:
        outcome = None
        stages = work.prepared.outcome.stages
        stages["write_start"] = time.time()
        if work.error is None:
            try:
                outcome = self._retry(partial(self._indexer.write, work.prepared))
                stages["written"] = time.time()
                self._unflushed += outcome.written
                self._last_write = time.monotonic()
            except BaseException as exc:
                work.error = exc
        self._finish(work, outcome)
        # After the batch is handed on: a written row is durable and found without a flush
        # (the flush seals rows into indexed segments), so its offset need not wait for it.
        if outcome is not None:
            self._maybe_flush()

    def _finish(self, work: _Work, outcome: IndexOutcome | None) -> None:
        with self._pending_lock:
            for pid, (seq, _) in list(self._pending.items()):
                if seq == work.seq:
                    del self._pending[pid]
        if outcome is None:
            work.batch.fail(work.error or RuntimeError("no outcome"))
            return
        source = {id(event): msg for msg, event in work.batch.items}
        for event, error in outcome.failures:
            kind: ErrorKind = getattr(error, "kind", "unprocessable")
            work.batch.reject(source[id(event)], kind, f"product {event.id}: {error}")
        self._record(outcome)
        log.info(
            "batch written: %d products written, %d deleted, %d unchanged, %d reused; "
            "%d texts and %d photos encoded",
            outcome.written,
            outcome.deleted,
            outcome.stale,
            outcome.reused,
            outcome.encoded_texts,
            outcome.encoded_images,
            extra={
                "offsets": offset_ranges(work.batch.messages),
                "encoded_texts": outcome.encoded_texts,
                "encoded_images": outcome.encoded_images,
            },
        )
        work.batch.finish()

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

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self._flush_interval_s
        if self._unflushed and (self._unflushed >= self._flush_rows or due):
            self._flush()

    def _flush(self) -> None:
        """On the writer thread, the only one that writes or flushes."""
        try:
            self._retry(self._indexer.flush)
        except BaseException:
            log.exception("flushing the store failed; will try again after a later batch")
            return
        self._unflushed, self._last_flush = 0, time.monotonic()
