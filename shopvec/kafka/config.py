"""librdkafka configuration built from settings: one place for security and timeouts."""

from __future__ import annotations

import uuid
from typing import Any

from shopvec.settings import Settings

__all__ = [
    "admin_config",
    "batch_fetch_wait_ms",
    "common_config",
    "consumer_config",
    "producer_config",
    "reply_reader_config",
]


def common_config(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap(),
        "client.id": k.client_id,
        "security.protocol": k.security_protocol,
        # A client writes whole requests and batches by linger.ms; Nagle's algorithm would
        # only hold a small request back until the broker's delayed ACK (tens of ms) came.
        # The Java client sets TCP_NODELAY too.
        "socket.nagle.disable": True,
    }
    if k.sasl_mechanism:
        conf["sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_username:
        conf["sasl.username"] = k.sasl_username
    if k.sasl_password is not None:
        conf["sasl.password"] = k.sasl_password.get_secret_value()
    if k.ssl_ca_location:
        conf["ssl.ca.location"] = k.ssl_ca_location
    conf.update(k.extra)
    return conf


def admin_config(settings: Settings) -> dict[str, Any]:
    return common_config(settings)


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf = common_config(settings)
    conf.update(
        {
            # Idempotence keeps a retried send from writing a message twice.
            "enable.idempotence": True,
            "acks": "all",
            # A worker writes only to topics that exist: asking about or producing to any
            # other must never create it.
            "allow.auto.create.topics": False,
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    k = settings.kafka
    conf = common_config(settings)
    conf.update(
        {
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            # Offsets are stored by hand once the side effect is done; the background commit
            # then only ever commits work that has been written.
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "session.timeout.ms": k.session_timeout_ms,
            "max.poll.interval.ms": k.max_poll_interval_ms,
            "fetch.wait.max.ms": settings.fetch_wait_ms(),
            "partition.assignment.strategy": "cooperative-sticky",
            # The prefetch queue is the one buffer that grows with a backlog: keep it small.
            "queued.max.messages.kbytes": 16384,
        }
    )
    conf.update(overrides)
    return conf


def batch_fetch_wait_ms(settings: Settings) -> int:
    """The fetch wait of the workers that gather micro-batches (indexer, behaviour), whose
    latency is their batch wait's anyway, so a fetch may wait longer than on the
    request/reply path.

    On the embedded broker this is more than speed: it holds each fetch for the whole wait and
    answers with what it has read by then. With a few megabytes on the broker, fetches of 2 ms
    came back empty every time, so a behaviour worker restarted mid-partition never caught up
    (`shopvec bench chaos`); 5 ms and more were answered."""
    if settings.kafka.fetch_wait_max_ms is not None:
        return settings.kafka.fetch_wait_max_ms
    return 100


def reply_reader_config(settings: Settings) -> dict[str, Any]:
    """A search client's reply reader: partitions assigned by hand, nothing committed, and the
    fetch wait of the request/reply path."""
    conf = common_config(settings)
    conf.update(
        {
            "group.id": f"shopvec-client-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": settings.fetch_wait_ms(),
        }
    )
    return conf
