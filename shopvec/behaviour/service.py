"""The behaviour worker's consume loop on confluent-kafka.

User events are keyed by user id, so one user's events arrive in order on one partition. A
batch is applied by the engine (shared counts, then user rows) and only then are its offsets
stored; but what makes a replay harmless is the state in Milvus (event ids in the user rows,
offsets in the count rows), not the committed offset. Bad messages go to the dead-letter topic
with their reason; a message the engine fails on alone is dead-lettered too and the loop goes on.
Users of the partitions this worker holds are checked for inactivity every expiry interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message
from pydantic import ValidationError

from schemas.user_event import parse_user_event
from shopvec.behaviour.engine import BatchOutcome, BehaviourEngine, Inbound
from shopvec.behaviour.metrics import BehaviourMetrics
from shopvec.kafka.dead_letters import (
    DeadLetterSink,
    classify_validation_error,
    readable_validation_error,
)
from shopvec.kafka.loop import next_batch, store_offsets, with_retries

__all__ = ["BehaviourService"]

log = logging.getLogger(__name__)


class BehaviourService:
    def __init__(
        self,
        *,
        consumer: Consumer,
        topic: str,
        engine: BehaviourEngine,
        dead_letters: DeadLetterSink,
        metrics: BehaviourMetrics,
        batch_size: int = 256,
        batch_wait_s: float = 0.2,
        expiry_interval_s: float = 300.0,
        max_retry_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._engine = engine
        self._dead = dead_letters
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._expiry_interval_s = expiry_interval_s
        self._max_retry_s = max_retry_s
        self._clock = clock
        self._next_expiry = 0.0
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe([self._topic], on_assign=lambda c, p: self.ready.set())
        try:
            while not stop.is_set():
                batch = next_batch(self._consumer, self._batch_size, self._batch_wait_s, stop)
                if batch:
                    self._process(batch, stop)
                self._expire(stop)
        finally:
            self._consumer.close()  # commits what was stored: the drain on SIGTERM
            log.info("behaviour consumer closed")

    def _process(self, batch: list[Message], stop: threading.Event) -> None:
        started = time.perf_counter()
        m = self._metrics
        m.events_in.inc(len(batch))
        inbound: list[tuple[Inbound, Message]] = []
        for msg in batch:
            try:
                event = parse_user_event(msg.value() or b"")
            except ValidationError as exc:
                self._dead_letter(
                    msg, classify_validation_error(exc), readable_validation_error(exc)
                )
                continue
            inbound.append((Inbound(event, msg.partition() or 0, msg.offset() or 0), msg))
        outcome = self._apply(inbound, stop)
        self._dead.flush()
        store_offsets(self._consumer, batch)
        m.applied.inc(outcome.applied)
        m.duplicates.inc(outcome.duplicates)
        m.unknown_products.inc(outcome.unknown_products)
        m.forgotten.inc(outcome.forgotten)
        m.batch_seconds.observe(time.perf_counter() - started)

    def _apply(self, inbound: list[tuple[Inbound, Message]], stop: threading.Event) -> BatchOutcome:
        events = [i for i, _ in inbound]
        try:
            return self._retrying(lambda: self._engine.apply(events), stop)
        except Exception:
            if len(inbound) <= 1 or stop.is_set():
                raise
        # One message may be what fails: apply them one by one, in order, and dead-letter
        # those that fail alone. If every one fails, the store is down: stop (and restart).
        log.warning("batch of %d failed; applying its messages one by one", len(inbound))
        total = BatchOutcome()
        failed = 0
        for item, msg in inbound:
            try:
                one = self._engine.apply([item])
            except Exception as exc:
                failed += 1
                self._dead_letter(msg, "unprocessable", f"behaviour: {exc}")
                continue
            for name, value in vars(one).items():
                setattr(total, name, getattr(total, name) + value)
        if failed == len(inbound):
            raise RuntimeError("every message of the batch failed; see the dead letters")
        return total

    def _expire(self, stop: threading.Event) -> None:
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + self._expiry_interval_s
        shards = {tp.partition for tp in self._consumer.assignment()}
        if not shards:
            return
        now_ms = int(self._clock() * 1000)
        expired = self._retrying(lambda: self._engine.expire(now_ms, shards), stop)
        self._metrics.expired.inc(expired)

    def _retrying(self, call: Callable[[], Any], stop: threading.Event) -> Any:
        return with_retries(
            call, stop, max_retry_s=self._max_retry_s, on_retry=self._metrics.retries.inc
        )

    def _dead_letter(self, msg: Message, kind: Any, reason: str) -> None:
        self._dead.send(msg, kind, reason)
        self._metrics.dead_lettered.labels(kind=kind).inc()
