"""Where a worker may write when a message names the topic: a reply topic chosen by a client
is untrusted input. It must match one of the configured patterns, be a legal Kafka topic name,
and exist already: no worker ever causes a topic to be created."""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

__all__ = ["TopicGuard", "topic_exists"]

log = logging.getLogger(__name__)

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

UNANSWERED_S = 5.0
"""After a lookup the broker did not answer, how long topics are not asked about."""


def topic_exists(producer: Producer, timeout_s: float = 5.0) -> Callable[[str], bool]:
    """Asks the broker about one topic; raises KafkaException when it cannot tell (the broker
    away). Producers run with allow.auto.create.topics off, so asking creates nothing."""

    def exists(topic: str) -> bool:
        meta = producer.list_topics(topic, timeout=timeout_s)
        found = meta.topics.get(topic)
        if found is None:
            return False
        if found.error is not None:
            if found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return False
            raise KafkaException(found.error)  # not allowed to see it, a leader away ...
        return bool(found.partitions)

    return exists


class TopicGuard:
    """patterns: shell-style (fnmatch, case-sensitive), e.g. "shopvec.search.replies.*".
    A topic found to exist is remembered for known_ttl_s; one that was not is asked about
    again next time (a client creates its reply topic just before its first request).
    exists raises KafkaException when it cannot tell; a topic that matches the patterns is
    then not refused."""

    def __init__(
        self,
        patterns: Sequence[str],
        exists: Callable[[str], bool],
        *,
        known_ttl_s: float = 300.0,
    ) -> None:
        self._patterns = list(patterns)
        self._exists = exists
        self._ttl = known_ttl_s
        self._known: dict[str, float] = {}
        self._unanswered_until = 0.0

    @property
    def patterns(self) -> list[str]:
        return list(self._patterns)

    def refusal(self, topic: str) -> str | None:
        """None if a reply may go to topic, else why not."""
        if not _LEGAL.match(topic):
            return f"reply topic {topic[:300]!r} is not a legal topic name"
        if not any(fnmatch.fnmatchcase(topic, p) for p in self._patterns):
            return (
                f"reply topic {topic!r} matches none of the allowed patterns "
                f"{', '.join(self._patterns)}"
            )
        now = time.monotonic()
        if self._known.get(topic, 0.0) > now or now < self._unanswered_until:
            return None
        try:
            found = self._exists(topic)
        except KafkaException as exc:
            # A broker slow or away is no fault of the request's: the reply goes (producers
            # create no topic, so to a topic that is missing it fails). Not asked again for a
            # while, so that a batch does not wait out one lookup a reply.
            log.warning("could not look up topic %s: %s; replying all the same", topic, exc)
            self._unanswered_until = time.monotonic() + UNANSWERED_S
            return None
        if not found:
            return f"reply topic {topic!r} does not exist; the client creates its reply topic"
        if len(self._known) > 10_000:
            self._known = {t: at for t, at in self._known.items() if at > now}
        self._known[topic] = now + self._ttl
        return None

    def gone(self, topic: str) -> bool:
        """Whether the broker says it no longer has topic, asked afresh; a topic gone is
        forgotten, so a reply that names it again is refused at once. Raises KafkaException
        when the broker cannot be asked."""
        if self._exists(topic):
            return False
        self._known.pop(topic, None)
        return True
