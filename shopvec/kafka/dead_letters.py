"""The dead-letter sink: the original message, where it came from, and why it failed."""

from __future__ import annotations

import logging

from confluent_kafka import Message, Producer
from pydantic import ValidationError

from schemas._base import utc_now
from schemas.dead_letter import DeadLetter, ErrorKind
from schemas.wire import HEADER_CONTENT_TYPE, HEADER_SCHEMA_VERSION

__all__ = ["DeadLetterSink", "classify_validation_error", "readable_validation_error"]

log = logging.getLogger(__name__)


def classify_validation_error(exc: ValidationError) -> ErrorKind:
    kinds = {e["type"] for e in exc.errors()}
    return "not_json" if kinds & {"json_invalid", "json_type"} else "schema_violation"


def readable_validation_error(exc: ValidationError) -> str:
    """What was wrong, where, in a line a producer's team can act on."""
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class DeadLetterSink:
    def __init__(self, producer: Producer, topic: str, worker: str) -> None:
        self._producer = producer
        self._topic = topic
        self._worker = worker
        self.count = 0
        self._unflushed = 0

    def send(self, msg: Message, kind: ErrorKind, reason: str) -> DeadLetter:
        record = DeadLetter(
            worker=self._worker,
            error_kind=kind,
            error_message=reason[:4096],
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key_base64=DeadLetter.encode(msg.key()),
            value_base64=DeadLetter.encode(msg.value()),
            failed_at=utc_now(),
        )
        self._producer.produce(
            self._topic,
            key=msg.key(),
            value=record.to_bytes(),
            headers=[
                (HEADER_CONTENT_TYPE, b"application/json"),
                (HEADER_SCHEMA_VERSION, str(record.schema_version).encode()),
            ],
        )
        self.count += 1
        self._unflushed += 1
        log.warning(
            "dead-lettered %s[%s]@%s: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            kind,
            reason[:300],
        )
        return record

    def flush(self, timeout_s: float = 30.0) -> None:
        """Called before offsets are stored: a dead letter must be durable first. Waits only
        when a dead letter was sent since the last flush: the producer may carry other
        messages (a query worker's replies) that need not hold the caller up."""
        if not self._unflushed:
            return
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise RuntimeError(f"{remaining} dead letters not acknowledged by the broker")
        self._unflushed = 0
