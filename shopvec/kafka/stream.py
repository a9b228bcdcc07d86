"""One runtime for every worker: consume, bound and decode, hand batches to the worker's logic,
dead-letter, store offsets, pause and resume, shut down, health.

A worker supplies a Handler: how to decode one message, and what to do with a batch of
decoded items. The runtime owns everything around it, so a fix to message handling lands once:

- At least once: a batch's offsets are stored only once the handler finished it and its dead
  letters are acknowledged, batches in the order they were consumed, so an offset never moves
  past work that is not done. A handler may finish a batch later, on another thread (the
  indexer's pipeline); with max_in_flight batches unfinished the runtime takes no more until
  one finishes (and pauses the partitions if none does for a while).
- Bounded work a batch: where the worker weighs its items (`weigh`; the indexer: a product's
  photos), one poll's messages are handed over as several batches of at most batch_size
  weight each, and a batch waits for its turn until fewer than max_in_flight are unfinished.
  What a worker holds at once is then bounded by its batches' weight, whatever the messages
  carry (sixteen photos each, in the indexer's case).
- No message stops the worker: an oversize message is refused at the door, one that fails to
  decode is dead-lettered with its reason, and a batch that fails for any reason other than a
  transient fault is handed over again one message at a time, so only the messages that fail
  alone are dead-lettered. Should several in a row fail alone, the fault is the system's and
  not the messages': the runtime stops dead-lettering, reports not ready with the reason, and
  tries the same message again with backoff until it goes through.
- Transient faults are the handler's to retry, through the Retrier the runtime gives it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from schemas.dead_letter import ErrorKind
from shopvec.errors import is_transient
from shopvec.kafka.batch import Batch, Handler, Reject, StreamMetrics
from shopvec.kafka.dead_letters import (
    DeadLetterSink,
    classify_validation_error,
    readable_validation_error,
)
from shopvec.kafka.loop import Retrier, next_batch, store_offsets
from shopvec.kafka.positions import Positions

__all__ = ["StreamRuntime", "Subscription"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Subscription(Protocol):
    """Topics that change while a worker runs (the search requests' generations)."""

    def topics(self) -> list[str]:
        """The topics to read now. Asked between polls, so it must be cheap most times."""
        ...


class StreamRuntime(Generic[T]):
    def __init__(
        self,
        *,
        worker: str,
        consumer: Consumer,
        topic: str | Subscription,
        handler: Handler[T],
        dead_letters: DeadLetterSink,
        metrics: StreamMetrics,
        retry: Retrier,
        max_message_bytes: int,
        size_setting: str,
        batch_size: int,
        batch_wait_s: float,
        max_in_flight: int = 1,
        drain_timeout_s: float = 120.0,
        system_fault_after: int = 5,
        fault_backoff_s: float = 1.0,
        pause_after_s: float = 10.0,
        weigh: Callable[[T], int] | None = None,
        positions: Positions | None = None,
    ) -> None:
        """retry: the Retrier the handler uses too; it carries the health the probes read.
        size_setting: the setting that raises max_message_bytes, named in the reason.
        weigh: an item's share of a batch (None: each counts one); a batch weighs at most
        batch_size, or a single item when that alone weighs more.
        pause_after_s: how long the runtime waits, at max_in_flight unfinished batches and
        without polling, for one to finish before it pauses the partitions (see
        _backpressure).
        positions: where the worker's output stands apart from its group (the indexer's
        collection, `shopvec.kafka.positions`): partitions start there where it has an offset,
        and each batch's offsets are recorded there as well as stored for the group."""
        self.worker = worker
        self._consumer = consumer
        self._topic = topic
        self._handler = handler
        self._dead = dead_letters
        self._metrics = metrics
        self.retry = retry
        self.health = retry.health
        self._stop = threading.Event()
        self._max_bytes = max_message_bytes
        self._size_setting = size_setting
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._max_in_flight = max_in_flight
        self._drain_timeout_s = drain_timeout_s
        self._system_fault_after = system_fault_after
        self._fault_backoff_s = fault_backoff_s
        self._pause_after_s = pause_after_s
        self._weigh = weigh
        self._positions = positions
        self._ledger: deque[Batch[T]] = deque()
        self._waiting: deque[Batch[T]] = deque()
        """Batches in the ledger not yet handed to the handler, waiting for their turn."""
        self._wake = threading.Event()
        self._paused = False
        self._failures_in_a_row = 0
        self._system_fault = False
        self._retry_at: float | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._subscribed: list[str] = []

    @property
    def ready(self) -> threading.Event:
        return self.health.assigned

    def assigned_partitions(self) -> list[tuple[str, int]]:
        """Safe from any thread: kept by the rebalance callbacks, since the consumer's own
        assignment() waits for the thread that is polling."""
        return sorted(self._assigned)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = self.retry.stop = stop
        self._follow()
        try:
            while not stop.is_set():
                self.health.beat()
                self.turn()
                self._follow()
                self._backpressure()
                if stop.is_set():
                    break
                messages = next_batch(self._consumer, self._batch_size, self._batch_wait_s, stop)
                if messages:
                    self.process(messages)
            # SIGTERM: finish what is in flight and store its offsets; close() commits them.
            self._drain()
        finally:
            try:
                self._handler.close()
            finally:
                try:
                    # Its revoke callback records the positions one last time.
                    self._consumer.close()
                    log.info("%s consumer closed", self.worker)
                finally:
                    if self._positions is not None:
                        self._positions.close()

    def turn(self) -> None:
        """Housekeeping: the handler's, then whatever finished batches can be completed, then
        the waiting batches that now have room."""
        self._handler.tick()
        self._settle()
        self._start_waiting()
        if self._positions is not None:
            self._positions.commit()

    def _follow(self) -> None:
        """Subscribes to the topics to read, again whenever they change: the partitions of
        topics no longer read are revoked (drained and committed first), those of new ones
        assigned, the others kept (cooperative rebalancing). Only from the loop itself, never
        from within a rebalance callback (whose drain turns the handler)."""
        wanted = [self._topic] if isinstance(self._topic, str) else self._topic.topics()
        if wanted == self._subscribed:
            return
        self._consumer.subscribe(
            wanted, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        if self._subscribed:
            log.info("%s: now reading %s", self.worker, ", ".join(wanted))
        self._subscribed = list(wanted)

    def process(self, messages: list[Message]) -> None:
        """One poll's messages: decoded, handed to the handler, completed as far as they can."""
        self._submit(self._decode(messages))
        self._settle()

    def _decode(self, messages: list[Message]) -> Batch[T]:
        from pydantic import ValidationError

        batch: Batch[T] = Batch(messages, _wake=self._wake)
        for msg in messages:
            size = len(msg.value() or b"") + len(msg.key() or b"")
            if size > self._max_bytes:
                batch.reject(
                    msg,
                    "oversize",
                    f"a message of {size} bytes; this worker takes at most {self._max_bytes} "
                    f"({self._size_setting})",
                )
                continue
            try:
                batch.items.append((msg, self._handler.decode(msg)))
            except Reject as bad:
                batch.reject(msg, bad.kind, bad.reason)
            except ValidationError as exc:
                batch.reject(msg, classify_validation_error(exc), readable_validation_error(exc))
            except Exception as exc:
                batch.reject(
                    msg, "unprocessable", f"{self.worker} could not read it: {_cause(exc)}"
                )
        return batch

    def _submit(self, batch: Batch[T]) -> None:
        """The poll's first batch is handed over at once (the loop polled because there was
        room); the rest of its batches wait for theirs."""
        first, *rest = self._parts(batch)
        self._ledger.append(first)
        self._ledger.extend(rest)
        self._waiting.extend(rest)
        self._start(first)
        self._start_waiting()

    def _parts(self, batch: Batch[T]) -> list[Batch[T]]:
        """The poll's batch as consecutive batches of at most batch_size weight each."""
        if self._weigh is None or len(batch.items) < 2:
            return [batch]
        groups: list[list[tuple[Message, T]]] = [[]]
        weight = 0
        for msg, item in batch.items:
            w = max(1, self._weigh(item))
            if groups[-1] and weight + w > self._batch_size:
                groups.append([])
                weight = 0
            groups[-1].append((msg, item))
            weight += w
        return [batch] if len(groups) == 1 else self._regroup(batch, groups)

    def _start_waiting(self) -> None:
        """Hands waiting batches over, in order, while fewer than max_in_flight are started and
        unfinished."""
        started = len(self._ledger) - len(self._waiting)
        while self._waiting and started < self._max_in_flight:
            self._start(self._waiting.popleft())
            started += 1

    def _resubmit(self, batches: list[Batch[T]]) -> None:
        """In place of the failed batch at the head of the ledger, in order."""
        self._ledger.popleft()
        self._ledger.extendleft(reversed(batches))
        for batch in batches:
            self._start(batch)

    def _start(self, batch: Batch[T]) -> None:
        if not batch.items:
            batch.finish()
            return
        try:
            self._handler.submit(batch)
        except Exception as exc:
            batch.fail(exc)

    # -- finishing batches, in order ----------------------------------------------------------

    def _settle(self) -> None:
        """Completes the finished batches at the head of the ledger: dead letters, offsets."""
        while self._ledger and self._ledger[0].done:
            batch = self._ledger[0]
            if batch.error is not None:
                step = self._recover(batch)
                if step == "wait":
                    return
                if step == "replaced":
                    continue
            self._ledger.popleft()
            self._complete(batch)

    def _recover(self, batch: Batch[T]) -> str:
        """A failed batch at the head of the ledger: "replaced" when it was handed over again,
        "complete" when its message is to be dead-lettered, "wait" when it waits for a retry."""
        exc = batch.error
        assert exc is not None
        if self._stop.is_set() and is_transient(exc):
            # Shutting down in the middle of a retry: leave the offsets where they are.
            raise exc
        if len(batch.items) > 1:
            self._metrics.batch_failures.labels(worker=self.worker).inc()
            log.warning(
                "%s: a batch of %d failed (%r); handing its messages over one at a time",
                self.worker,
                len(batch.items),
                exc,
            )
            self._resubmit(self._split(batch))
            return "replaced"
        if self._retry_at is not None:
            if time.monotonic() < self._retry_at:
                return "wait"
            self._retry_at = None
            self._resubmit([self._retry_of(batch)])
            return "replaced"
        self._failures_in_a_row += 1
        if self._failures_in_a_row >= self._system_fault_after:
            # Message after message fails alone: the store or the configuration is at fault.
            # Dead-lettering on would empty the topic into the dead letters; wait for a fix,
            # trying the same message again with backoff while the loop keeps polling.
            reason = (
                f"{self._failures_in_a_row} messages in a row failed alone, the last with "
                f"{_cause(exc)}: a fault of the system rather than of the messages; fix it and the "
                "worker resumes with the same message"
            )
            if not self._system_fault:
                log.error("%s: %s", self.worker, reason)
            self._system_fault = True
            self.health.trouble(reason[:500])
            extra = min(self._failures_in_a_row - self._system_fault_after, 5)
            self._retry_at = time.monotonic() + min(30.0, self._fault_backoff_s * 2.0**extra)
            return "wait"
        msg = batch.items[0][0]
        batch.reject(msg, "unprocessable", f"{self.worker}: {_cause(exc)}")
        # Given up on: its completion is no success that ends a run of failures.
        batch.items, batch.error = [], None
        return "complete"

    def _split(self, batch: Batch[T]) -> list[Batch[T]]:
        return self._regroup(batch, [[pair] for pair in batch.items])

    def _regroup(self, batch: Batch[T], groups: list[list[tuple[Message, T]]]) -> list[Batch[T]]:
        """batch's items as consecutive batches, one a group. Each stores its own items'
        offsets; the batch's rejects go with the first (dead-lettered before any offset past
        them is stored), and the last stores every offset of the batch again, in consumption
        order, so each partition's stored offset ends at its highest."""
        parts = [Batch([msg for msg, _ in g], list(g), _wake=self._wake) for g in groups]
        parts[0].rejects = list(batch.rejects)
        parts[-1].messages = list(batch.messages)
        return parts

    def _retry_of(self, batch: Batch[T]) -> Batch[T]:
        return Batch(batch.messages, list(batch.items), list(batch.rejects), _wake=self._wake)

    def _complete(self, batch: Batch[T]) -> None:
        if batch.items:
            self._failures_in_a_row = 0
            if self._system_fault:
                self._system_fault = False
                self.health.clear()
                log.info("%s: messages go through again", self.worker)
        for msg, kind, reason in batch.rejects:
            self._dead_letter(msg, kind, reason)
        if batch.rejects:
            self.retry(self._dead.flush)
        store_offsets(self._consumer, batch.messages)
        if self._positions is not None:
            self._positions.advance(batch.messages)

    def _dead_letter(self, msg: Message, kind: ErrorKind, reason: str) -> None:
        try:
            self._dead.send(msg, kind, reason)
        except Exception as exc:
            # Not even an envelope could be made or queued: pass the message over, loudly.
            log.exception(
                "%s: skipped %s[%s]@%s (%s: %s): no dead letter: %r",
                self.worker,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                kind,
                reason[:300],
                exc,
            )
            self._metrics.skipped.labels(worker=self.worker, kind=kind).inc()
            return
        self._metrics.dead_lettered.labels(worker=self.worker, kind=kind).inc()

    # -- backpressure, rebalance, shutdown ----------------------------------------------------

    def _backpressure(self) -> None:
        """At max_in_flight unfinished batches, waits for the handler before taking more.

        The wait does not poll, so what the consumer has fetched ahead stays in its queue:
        pausing a partition drops its fetched messages (librdkafka purges them, and resuming
        fetches them again), and the handler would then wait a fetch round trip for its next
        batch each time the pipeline filled (every few batches, when the encoder is the
        slowest stage). Only when no batch finishes within pause_after_s (a store outage, a
        slow batch) are the partitions paused, so that the polls that follow serve the group
        (rebalances) and take nothing."""
        full = len(self._ledger) >= self._max_in_flight
        if full and not self._paused:
            deadline = time.monotonic() + self._pause_after_s
            while len(self._ledger) >= self._max_in_flight and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    self._consumer.pause(self._consumer.assignment())
                    self._paused = True
                    break
                self.health.beat()
                self._wake.wait(min(0.5, left))
                self._wake.clear()
                self.turn()
        if self._paused:
            # Wait for the handler rather than spin; the poll that follows keeps the group.
            self._wake.wait(0.5)
            self._wake.clear()
            self.turn()
            if len(self._ledger) < self._max_in_flight:
                self._consumer.resume(self._consumer.assignment())
                self._paused = False

    def _drain(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self._drain_timeout_s)
        while self._ledger and time.monotonic() < deadline:
            self.health.beat()
            self._wake.wait(0.1)
            self._wake.clear()
            self.turn()
        if self._ledger:
            log.warning("%s: %d batches unfinished after the drain", self.worker, len(self._ledger))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._positions is not None and partitions:
            starts = self._positions.starts(partitions)
            # Assigned here with the offsets (the client assigns what the callback did not);
            # OFFSET_INVALID: the group's committed offset, as without positions.
            consumer.incremental_assign(
                [
                    TopicPartition(
                        tp.topic, tp.partition, starts.get((tp.topic, tp.partition), OFFSET_INVALID)
                    )
                    for tp in partitions
                ]
            )
            if starts:
                log.info(
                    "%s: starting from the output's own offsets: %s",
                    self.worker,
                    ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(starts.items())),
                )
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self.health.assigned.set()
        log.info(
            "%s: partitions assigned %s, now holding %s",
            self.worker,
            _named(partitions),
            ", ".join(f"{t}[{p}]" for t, p in sorted(self._assigned)),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish and store what is in flight while the partitions are still ours, then commit,
        # so the next owner starts after it instead of doing it again.
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}
        log.info("%s: partitions revoked %s", self.worker, _named(partitions))
        self._drain()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)
        if self._positions is not None:
            self._positions.commit(force=True)
            self._positions.drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may already own them, so nothing is committed.
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}
        if self._positions is not None:
            self._positions.drop(partitions)
        log.warning("%s: partitions lost %s", self.worker, _named(partitions))


def _cause(exc: BaseException) -> str:
    """An exception as a reason: its type and message (pymilvus's exceptions have an empty
    repr, so the reason read `DataNotMatchException()` and no more)."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if name in text else f"{name}: {text}"


def _named(partitions: list[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)) or "none"
