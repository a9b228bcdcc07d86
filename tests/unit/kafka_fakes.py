"""In-memory stand-ins for the confluent-kafka clients the stream runtime drives, for unit
tests; the integration tests run the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException

Callback = Callable[[KafkaError | None, Any], None]


class FakeMessage:
    def __init__(
        self,
        offset: int,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        topic: str = "in",
        partition: int = 0,
    ) -> None:
        self._offset, self._value, self._key = offset, value, key
        self._headers = headers or []
        self._topic, self._partition = topic, partition

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, int(time.time() * 1000)


class FakeProducer:
    """Holds each produced message until the test acknowledges (or fails) it; flush
    acknowledges everything. refuse: error codes produce() raises at once, by topic."""

    def __init__(self) -> None:
        self.unacknowledged: list[tuple[str, bytes, Callback | None]] = []
        self.delivered: list[tuple[str, bytes]] = []
        self.flushes = 0
        self.refuse_over: dict[str, int] = {}
        self.fail_delivery: dict[str, KafkaError] = {}

    def produce(
        self, topic: str, value: bytes = b"", on_delivery: Callback | None = None, **_: Any
    ) -> None:
        limit = self.refuse_over.get(topic)
        if limit is not None and len(value) > limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.unacknowledged.append((topic, value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        self.acknowledge(len(self.unacknowledged))
        return 0

    def acknowledge(self, n: int, *, first: int = 0, err: KafkaError | None = None) -> None:
        taken = self.unacknowledged[first : first + n]
        del self.unacknowledged[first : first + n]
        for topic, value, callback in taken:
            error = err or self.fail_delivery.get(topic)
            if error is None:
                self.delivered.append((topic, value))
            if callback is not None:
                callback(error, FakeMessage(0, value, topic=topic))

    def on(self, topic: str) -> list[bytes]:
        return [v for t, v in self.delivered if t == topic]


class FakeConsumer:
    def __init__(self) -> None:
        self.stored: list[int] = []
        self.paused = False
        self.pauses = 0
        self.subscriptions: list[list[str]] = []
        self.ends: dict[tuple[str, int], int] = {}
        """High watermarks by (topic, partition), for get_watermark_offsets."""
        self.assigned_at: dict[tuple[str, int], int] = {}
        """Start offsets by (topic, partition), from incremental_assign."""
        self.commits = 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.subscriptions.append(list(topics))

    def get_watermark_offsets(self, tp: Any, **options: Any) -> tuple[int, int]:
        return 0, self.ends.get((tp.topic, tp.partition), 0)

    def store_offsets(self, msg: FakeMessage) -> None:
        self.stored.append(msg.offset())

    def assignment(self) -> list[Any]:
        return []

    def pause(self, partitions: list[Any]) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self, partitions: list[Any]) -> None:
        self.paused = False

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.assigned_at = {(tp.topic, tp.partition): tp.offset for tp in partitions}

    def commit(self, **options: Any) -> None:
        self.commits += 1
