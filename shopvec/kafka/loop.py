"""What every batching consume loop shares: micro-batches bounded by size and wait, offsets
stored past a rebalance, and the retry of transient failures with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from shopvec.errors import is_transient
from shopvec.kafka.health import Health

__all__ = ["Retrier", "header", "next_batch", "store_offsets"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def next_batch(
    consumer: Consumer, batch_size: int, batch_wait_s: float, stop: threading.Event
) -> list[Message]:
    """Up to batch_size messages, waiting at most batch_wait_s once the first one is in; an
    empty list after half a second with none, so the caller can do its housekeeping.
    A fatal consumer error raises; partition EOFs are skipped; other errors are logged."""
    # consume(n, t) returns after n messages or t seconds, whichever comes first, so the first
    # message is polled for alone: the batch wait starts when it arrives, not before.
    first = consumer.poll(0.5)
    if first is None:
        return []
    pending = [first]
    batch: list[Message] = []
    deadline = time.monotonic() + batch_wait_s
    while not stop.is_set():
        for msg in pending:
            err = msg.error()
            if err is None:
                batch.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", err)
        remaining = deadline - time.monotonic()
        if len(batch) >= batch_size or remaining <= 0:
            break
        pending = consumer.consume(batch_size - len(batch), remaining)
        if not pending:
            break
    return batch


def header(msg: Message, name: str) -> str | None:
    """A message's header by name, as text (bytes that are not UTF-8 replaced); None if absent."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    for key, value in pairs:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def store_offsets(consumer: Consumer, messages: list[Message]) -> None:
    """Marks messages done. A partition taken away by a rebalance meanwhile refuses the store
    (its new owner replays the message, which every worker's effects tolerate), so that one is
    skipped rather than stopping the worker."""
    for msg in messages:
        try:
            consumer.store_offsets(msg)
        except KafkaException as exc:
            log.debug("offset not stored for %s[%s]: %s", msg.topic(), msg.partition(), exc)


class Retrier:
    """Retries transient failures (the broker or Milvus away, a timeout) with backoff for as long
    as they last: never dead-lettered, never skipped. Waiting counts as progress for liveness;
    past unready_after_s the worker reports not ready, with the fault as the reason. Anything
    else propagates at once, for the caller to treat as a fault of the messages."""

    def __init__(
        self,
        health: Health,
        *,
        on_retry: Callable[[], None] | None = None,
        unready_after_s: float = 30.0,
        max_delay_s: float = 10.0,
    ) -> None:
        self.stop = threading.Event()
        """The runtime points this at its own stop flag when it runs."""
        self.health = health
        self._on_retry = on_retry
        self._unready_after_s = unready_after_s
        self._max_delay_s = max_delay_s

    def __call__(self, call: Callable[[], T]) -> T:
        delay, waited, troubled = 0.5, 0.0, False
        while True:
            try:
                result = call()
            except Exception as exc:
                if self.stop.is_set() or not is_transient(exc):
                    raise
                if self._on_retry is not None:
                    self._on_retry()
                self.health.beat()
                if waited >= self._unready_after_s and not troubled:
                    troubled = True
                    self.health.trouble(f"retrying for {waited:.0f}s: {exc}"[:500])
                log.warning("transient failure, retrying in %.1fs: %s", delay, exc)
                self.stop.wait(delay)
                waited += delay
                delay = min(delay * 2, self._max_delay_s)
                continue
            if troubled:
                self.health.clear()
            return result
