"""What every batching consume loop shares: micro-batches bounded by size and wait, and the
retry of transient failures with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

__all__ = ["next_batch", "store_offsets", "with_retries"]

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


def store_offsets(consumer: Consumer, messages: list[Message]) -> None:
    """Marks messages done. A partition taken away by a rebalance meanwhile refuses the store
    (its new owner replays the message, which every worker's effects tolerate), so that one is
    skipped rather than stopping the worker."""
    for msg in messages:
        try:
            consumer.store_offsets(msg)
        except KafkaException as exc:
            log.debug("offset not stored for %s[%s]: %s", msg.topic(), msg.partition(), exc)


def with_retries(
    call: Callable[[], T],
    stop: threading.Event,
    *,
    max_retry_s: float,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Transient failures (Milvus away, a timeout) are retried, never dead-lettered; past
    max_retry_s the error propagates and the process exits so the orchestrator restarts it,
    with the batch's offsets not stored."""
    delay, waited = 0.5, 0.0
    while True:
        try:
            return call()
        except Exception as exc:
            if waited >= max_retry_s or stop.is_set():
                raise
            if on_retry is not None:
                on_retry()
            log.warning("transient failure, retrying in %.1fs: %s", delay, exc)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)
