"""The behaviour worker's logic, as a handler of the stream runtime.

User events are keyed by user id, so one user's events arrive in order on one partition. A
batch is applied by the engine (shared counts, then user rows); the runtime stores its offsets
afterwards. What makes a replay harmless is the state in Milvus (event ids in the user rows,
offsets in the count rows), not the committed offset. Users of the partitions this worker holds
are checked for inactivity every expiry interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message

from schemas.user_event import UserEvent, parse_user_event
from shopvec.behaviour.engine import BehaviourEngine, Inbound
from shopvec.behaviour.metrics import BehaviourMetrics
from shopvec.kafka.batch import Batch, Reject
from shopvec.kafka.loop import Retrier

__all__ = ["BehaviourService"]

log = logging.getLogger(__name__)


class BehaviourService:
    """consumer: only to learn which partitions (shards) this worker holds, for expiry."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        engine: BehaviourEngine,
        metrics: BehaviourMetrics,
        retry: Retrier,
        expiry_interval_s: float = 300.0,
        max_future_s: float = 300.0,
        max_age_s: float = 365 * 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._consumer = consumer
        self._engine = engine
        self._metrics = metrics
        self._retry = retry
        self._expiry_interval_s = expiry_interval_s
        self._max_future_s = max_future_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._next_expiry = 0.0

    def decode(self, msg: Message) -> Inbound:
        self._metrics.events_in.inc()
        event = parse_user_event(msg.value() or b"")
        if isinstance(event, UserEvent):
            ahead = event.timestamp.timestamp() - self._clock()
            if ahead > self._max_future_s:
                # Decay and popularity follow event time: one event a year ahead would move
                # the shared counts' clock there. A forget is never refused.
                raise Reject(
                    "schema_violation",
                    f"timestamp {event.timestamp.isoformat()} is {ahead:.0f} s ahead of this "
                    f"worker's clock (at most {self._max_future_s:.0f}: "
                    "SHOPVEC_BEHAVIOUR__MAX_FUTURE_S)",
                )
            if -ahead > self._max_age_s:
                # Past retention: expiry may already have dropped its user, and a replay of it
                # would bring them back with a share the counts no longer hold.
                raise Reject(
                    "schema_violation",
                    f"timestamp {event.timestamp.isoformat()} is older than a user is kept "
                    f"({self._max_age_s / 86_400:g} days: SHOPVEC_BEHAVIOUR__INACTIVE_TTL_DAYS)",
                )
        return Inbound(event, msg.partition() or 0, msg.offset() or 0)

    def submit(self, batch: Batch[Inbound]) -> None:
        started = time.perf_counter()
        events = [inbound for _, inbound in batch.items]
        outcome = self._retry(lambda: self._engine.apply(events))
        m = self._metrics
        m.applied.inc(outcome.applied)
        m.duplicates.inc(outcome.duplicates)
        m.unknown_products.inc(outcome.unknown_products)
        m.forgotten.inc(outcome.forgotten)
        m.batch_seconds.observe(time.perf_counter() - started)
        batch.finish()

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + self._expiry_interval_s
        shards = {tp.partition for tp in self._consumer.assignment()}
        if not shards:
            return
        now_ms = int(self._clock() * 1000)
        expired = self._retry(lambda: self._engine.expire(now_ms, shards))
        self._metrics.expired.inc(expired)

    def close(self) -> None:
        return None
