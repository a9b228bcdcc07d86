"""The dead-letter sink: the original message, where it came from, and why it failed.

A dead letter has a bounded size whatever the original's: beyond the bound the original is cut,
with its full size and SHA-256 kept in the envelope. Every send is tracked to the broker's
acknowledgement. A dead letter the broker refuses for good (too large for the topic, no right
to write) is sent again without the original; if even that is refused, the message is skipped:
logged with its topic, partition and offset and counted, never allowed to stop the worker.
A broker that does not answer is not such a refusal: flush() then raises DeadLetterBacklog,
which the runtime retries, so no offset moves past a dead letter the broker may yet lose.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import ValidationError

from schemas._base import utc_now
from schemas.dead_letter import DeadLetter, ErrorKind
from schemas.wire import HEADER_CONTENT_TYPE, HEADER_SCHEMA_VERSION

__all__ = [
    "DeadLetterBacklog",
    "DeadLetterSink",
    "classify_validation_error",
    "readable_validation_error",
]

log = logging.getLogger(__name__)

_MAX_KEY_BYTES = 1024
_ENVELOPE_SLACK = 256
"""Bytes kept free for what the estimate of the envelope leaves out (escaping, the timestamp)."""

# Errors after which the same record will never be taken, however often it is sent.
_REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.POLICY_VIOLATION,
}


class DeadLetterBacklog(TimeoutError):
    """Dead letters the broker has not acknowledged in time: transient, retried by the caller."""


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


@dataclass
class _Pending:
    record: DeadLetter
    key: bytes | None
    stripped: bool = False


class DeadLetterSink:
    """max_bytes bounds a dead letter's body; on_skip is told of each message that could not be
    dead-lettered at all (the runtime counts them)."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        worker: str,
        *,
        max_bytes: int = 256 * 1024,
        on_skip: Callable[[DeadLetter, str], None] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._worker = worker
        self._max_bytes = max_bytes
        self._on_skip = on_skip
        self.count = 0
        self.skipped = 0
        self._pending: dict[int, _Pending] = {}
        self._refused: list[tuple[int, KafkaError]] = []
        self._next_id = 0

    def send(self, msg: Message, kind: ErrorKind, reason: str) -> DeadLetter:
        record = self.envelope(msg, kind, reason)
        key = msg.key()
        if key is not None and len(key) > _MAX_KEY_BYTES:
            key = hashlib.sha256(key).hexdigest().encode()
        self.count += 1
        log.warning(
            "dead-lettered %s[%s]@%s: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            kind,
            reason[:300],
        )
        self._produce(_Pending(record, key))
        return record

    def envelope(self, msg: Message, kind: ErrorKind, reason: str) -> DeadLetter:
        """The dead letter for msg, its body within max_bytes."""
        value, key = msg.value(), msg.key()
        record = DeadLetter(
            worker=self._worker,
            error_kind=kind,
            error_message=reason[:4096],
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key_base64=DeadLetter.encode(key[:_MAX_KEY_BYTES] if key is not None else None),
            value_size=None if value is None else len(value),
            value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
            failed_at=utc_now(),
        )
        if value is None:
            return record
        # Base64 takes 4 bytes for every 3: what the envelope leaves of the bound, in raw bytes.
        room = (self._max_bytes - len(record.to_bytes()) - _ENVELOPE_SLACK) * 3 // 4
        cut = len(value) > room
        kept = value[: max(room, 0)] if cut else value
        return record.model_copy(
            update={
                "value_base64": DeadLetter.encode(kept) if kept else None,
                "value_truncated": cut,
            }
        )

    def _produce(self, entry: _Pending) -> None:
        ident = self._next_id
        self._next_id += 1
        body = entry.record.to_bytes()
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    key=entry.key,
                    value=body,
                    headers=[
                        (HEADER_CONTENT_TYPE, b"application/json"),
                        (HEADER_SCHEMA_VERSION, str(entry.record.schema_version).encode()),
                    ],
                    on_delivery=lambda err, _msg: self._delivered(ident, err),
                )
            except BufferError:
                # The producer's queue is full: let it deliver, then try again.
                self._producer.poll(0.5)
                continue
            except KafkaException as exc:
                # Refused before it left this process (larger than message.max.bytes).
                self._pending[ident] = entry
                self._refused.append((ident, exc.args[0]))
                return
            self._pending[ident] = entry
            return

    def _delivered(self, ident: int, err: KafkaError | None) -> None:
        if err is None:
            self._pending.pop(ident, None)
        else:
            self._refused.append((ident, err))

    def _settle_refused(self) -> None:
        refused, self._refused = self._refused, []
        for ident, err in refused:
            entry = self._pending.pop(ident, None)
            if entry is None:
                continue
            if err.code() not in _REFUSED:
                # The broker went away or timed out: the same record may yet be taken.
                log.warning("dead letter not delivered, sending again: %s", err)
                self._produce(entry)
            elif not entry.stripped and entry.record.value_base64 is not None:
                log.warning("dead letter refused (%s); sending it without the original", err)
                stripped = entry.record.model_copy(
                    update={"value_base64": None, "value_truncated": True}
                )
                self._produce(_Pending(stripped, entry.key, stripped=True))
            else:
                self._skip(entry.record, f"dead-letter topic refused it: {err.str()}")

    def _skip(self, record: DeadLetter, why: str) -> None:
        self.skipped += 1
        log.error(
            "skipped %s[%s]@%s (%s: %s): %s",
            record.topic,
            record.partition,
            record.offset,
            record.error_kind,
            record.error_message[:300],
            why,
        )
        if self._on_skip is not None:
            self._on_skip(record, why)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Called before offsets are stored: a dead letter must be durable (or skipped for
        good) first. Returns at once when none is outstanding: the producer may carry other
        messages (a query worker's replies) that need not hold the caller up."""
        deadline = time.monotonic() + timeout_s
        while self._pending:
            self._producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            self._settle_refused()
            if self._pending and time.monotonic() >= deadline:
                raise DeadLetterBacklog(
                    f"{len(self._pending)} dead letters not acknowledged by the broker "
                    f"on {self._topic} in {timeout_s:.0f}s"
                )
