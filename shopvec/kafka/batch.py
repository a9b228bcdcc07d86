"""What a worker's logic and the stream runtime exchange: a batch of decoded messages, the
Handler that applies it, the Reject a decoder raises, and what the runtime counts."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter

from schemas.dead_letter import ErrorKind

__all__ = ["Batch", "Handler", "Reject", "StreamMetrics"]

T = TypeVar("T")


class Reject(Exception):
    """Raised by a handler's decode: this message is bad, and why."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: ErrorKind = kind
        self.reason = reason


@dataclass(eq=False)
class Batch(Generic[T]):
    """One poll's messages on their way through a worker."""

    messages: list[Message]
    items: list[tuple[Message, T]] = field(default_factory=list)
    rejects: list[tuple[Message, ErrorKind, str]] = field(default_factory=list)
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event | None = None

    def reject(self, msg: Message, kind: ErrorKind, reason: str) -> None:
        """msg goes to the dead-letter topic once the batch is finished."""
        self.rejects.append((msg, kind, reason))

    def finish(self) -> None:
        """The batch's effects are done (any thread)."""
        self._done.set()
        if self._wake is not None:
            self._wake.set()

    def fail(self, exc: BaseException) -> None:
        """The batch could not be done (any thread); the runtime decides what follows."""
        self.error = exc
        self.finish()

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Handler(Protocol[T]):
    """A worker's logic. decode runs on the consumer thread for each message; submit starts the
    batch's effects and calls batch.finish() (or fail()) when they are done, then or later;
    tick runs on every turn of the loop, also while it waits (housekeeping, delivery reports);
    close runs once, after the last batch."""

    def decode(self, msg: Message) -> T: ...

    def submit(self, batch: Batch[T]) -> None: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class StreamMetrics:
    """What the runtime counts, labelled by worker, in the worker's registry."""

    worker: str
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.dead_lettered = Counter(
            "shopvec_dead_lettered",
            "Messages sent to the dead-letter topic",
            ["worker", "kind"],
            registry=r,
        )
        self.skipped = Counter(
            "shopvec_skipped",
            "Messages that failed and could not even be dead-lettered: logged and passed over",
            ["worker", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "shopvec_retries", "Transient failures retried", ["worker"], registry=r
        )
        self.batch_failures = Counter(
            "shopvec_batch_failures",
            "Batches that failed and were handed over again one message at a time",
            ["worker"],
            registry=r,
        )
