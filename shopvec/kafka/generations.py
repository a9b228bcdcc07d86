"""The search requests topic in generations, on a broker that cannot drop records.

The embedded broker keeps every record and slows as a partition fills (docs/benchmarks.md,
"The embedded broker"): from about 20,000 searches through one partition, a fetch that may
wait 2 ms returns nothing and the stack stops answering. A reply topic is one client's, and
that client replaces it (shopvec.client). The requests topic is shared by every client and
read by the query workers' group, and the broker can neither delete records nor add
partitions, so the topic itself is replaced, in generations: `<requests>`, then
`<requests>.g1`, `<requests>.g2` ..., each with the partitions of the one before.

Clients and workers agree on where requests go from which generations exist, without talking
to each other:

- the newest generation is a standby: made ahead, read by the workers, sent to by no one;
- clients send to the one before it, the *current* generation (to the only one while there is
  one);
- once a partition of the current generation holds `limit` records, whoever notices first (a
  client from an offset the broker acknowledged, a worker from the partitions' end offsets)
  makes a new standby: the old standby becomes current, so requests move to a topic the
  workers already read, and the current one becomes the *previous*;
- workers read the previous, current and standby generations, and an older one for
  `unsubscribe_after_s` after they saw it retire (a client that has not noticed the move
  keeps sending to where it sent for up to `refresh_s`); `delete_after_s` after that, a
  worker deletes it. By then no worker of the group reads it: on the embedded broker a
  consumer crashed (a segmentation fault) when a topic of its subscription was deleted.

With a limit of 0 (Kafka, whose retention bounds the topic) there is one generation, the
configured name, and nothing is made or deleted.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from shopvec.kafka.admin import create_topic, delete_topics
from shopvec.kafka.config import admin_config
from shopvec.settings import Settings

__all__ = [
    "RequestTopic",
    "RequestTopics",
    "current_generation",
    "generation_topic",
    "generations_of",
    "listing",
    "request_generations",
]

log = logging.getLogger(__name__)

_RETRY_S = 1.0

Listing = Callable[[], Mapping[str, int]]
"""The broker's topics, each with its number of partitions."""


def generation_topic(base: str, generation: int) -> str:
    return base if generation == 0 else f"{base}.g{generation}"


def generations_of(base: str, topics: Iterable[str]) -> list[int]:
    """The generations of base among topic names, oldest first."""
    # Any number of digits: the next generation of any that exists must count as one, or a
    # topic made by hand with a large number would hold requests where they are for good.
    pattern = re.compile(re.escape(base) + r"(?:\.g([1-9][0-9]*))?")
    found = []
    for name in topics:
        match = pattern.fullmatch(name)
        if match:
            found.append(int(match.group(1) or 0))
    return sorted(found)


_G = TypeVar("_G", int, str)


def current_generation(generations: Sequence[_G]) -> _G:
    """Where requests go: the one before the standby, or the only one (of generations oldest
    first, as numbers or as topic names)."""
    return generations[-2] if len(generations) >= 2 else generations[-1]


def request_generations(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """Every generation of the search requests topic on the broker, oldest first."""
    base = settings.topics.search_requests
    listed = AdminClient(admin_config(settings)).list_topics(timeout=timeout_s).topics
    return [generation_topic(base, g) for g in generations_of(base, listed)]


def listing(client: Consumer | Producer, timeout_s: float = 5.0) -> Listing:
    """A Listing from a librdkafka client."""

    def topics() -> dict[str, int]:
        meta = client.list_topics(timeout=timeout_s)
        return {
            name: len(t.partitions)
            for name, t in meta.topics.items()
            if t.error is None and t.partitions
        }

    return topics


class _Generations:
    """What clients and workers share: the limit, the names, making the next standby."""

    def __init__(self, settings: Settings, topics: Listing) -> None:
        self._settings = settings
        self._base = settings.topics.search_requests
        self._limit = settings.request_topic_records()
        self._list = topics

    def _listed(self) -> tuple[list[int], Mapping[str, int]]:
        listed = self._list()
        return generations_of(self._base, listed), listed

    def _make(self, generation: int, partitions: int) -> None:
        name = generation_topic(self._base, generation)
        if create_topic(self._settings, name, partitions):
            log.info("search requests: new standby generation %s", name)


class RequestTopic(_Generations):
    """A client's side: the topic to send the next request to."""

    def __init__(
        self,
        settings: Settings,
        topics: Listing,
        *,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, topics)
        self._refresh_s = refresh_s
        self._clock = clock
        self._current = self._base
        self._checked_at: float | None = None
        self._full = False
        self._lock = threading.Lock()

    def name(self) -> str:
        """Safe from any thread (a client sends from several)."""
        if not self._limit:
            return self._base
        with self._lock:
            now = self._clock()
            # Once the current one is full, the next send asks; should the broker not answer,
            # a second later again, not on every send.
            every = _RETRY_S if self._full else self._refresh_s
            if self._checked_at is None or now - self._checked_at >= every:
                self._refresh(now)
            return self._current

    def acknowledged(self, topic: str, offset: int) -> None:
        """The broker stored a request at offset: past the limit, the next request finds out
        where requests go now, and makes a new standby if no one has."""
        if self._limit and topic == self._current and offset >= self._limit - 1:
            self._full = True

    def _refresh(self, now: float) -> None:
        self._checked_at = now
        try:
            generations, listed = self._listed()
            if not generations:
                return  # the topic does not exist (yet): sending says so
            current = generation_topic(self._base, current_generation(generations))
            if self._full and current == self._current:
                self._make(generations[-1] + 1, listed[current])
                generations.append(generations[-1] + 1)
                current = generation_topic(self._base, current_generation(generations))
        except Exception as exc:  # requests keep going where they went; asked again later
            log.warning("could not look up the search requests topics: %s", exc)
            return
        self._full = False
        if current != self._current:
            log.info("search requests now go to %s", current)
        self._current = current


class RequestTopics(_Generations):
    """The query workers' side: the generations to read (the runtime's subscription), the
    standby made ahead, the retired ones deleted."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        *,
        refresh_s: float = 5.0,
        unsubscribe_after_s: float | None = None,
        delete_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        topics: Listing | None = None,
    ) -> None:
        super().__init__(settings, topics or listing(consumer))
        self._consumer = consumer
        self._refresh_s = refresh_s
        # A client sends to a retired generation for up to its refresh_s (10 s); a request
        # there older than max_request_age_s is dropped unanswered anyway.
        self._unsubscribe_after_s = (
            unsubscribe_after_s
            if unsubscribe_after_s is not None
            else max(30.0, settings.query.max_request_age_s) + 10.0
        )
        self._delete_after_s = delete_after_s
        self._clock = clock
        self._topics = [self._base]
        self._checked_at: float | None = None
        self._retired: dict[int, float] = {}
        """Generations older than the previous one, with when this worker first saw so."""

    def topics(self) -> list[str]:
        """The topics to read now; between polls, so a broker is asked every refresh_s."""
        if not self._limit:
            return self._topics
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._refresh_s:
            self._checked_at = now
            try:
                self._refresh(now)
            except Exception as exc:  # read what was read; asked again next time
                log.warning("could not look up the search requests topics: %s", exc)
        return self._topics

    def _refresh(self, now: float) -> None:
        generations, listed = self._listed()
        if not generations:
            return
        partitions = listed[generation_topic(self._base, generations[-1])]
        if len(generations) == 1:
            self._make(generations[-1] + 1, partitions)
            generations.append(generations[-1] + 1)
        # Also at once when the only generation was full already (a stack that ran without).
        if self._full(current_generation(generations), listed):
            self._make(generations[-1] + 1, partitions)
            generations.append(generations[-1] + 1)
        live, old = generations[-3:], generations[:-3]
        for g in old:
            self._retired.setdefault(g, now)
        self._retired = {g: at for g, at in self._retired.items() if g in old}
        read = [g for g in old if now - self._retired[g] < self._unsubscribe_after_s] + live
        gone = [
            g
            for g in old
            if now - self._retired[g] >= self._unsubscribe_after_s + self._delete_after_s
        ]
        if gone:
            names = [generation_topic(self._base, g) for g in gone]
            delete_topics(self._settings, names, timeout_s=10)
            log.info("search requests: deleted retired generations %s", ", ".join(names))
            for g in gone:
                del self._retired[g]
        self._topics = [generation_topic(self._base, g) for g in read]

    def _full(self, generation: int, listed: Mapping[str, int]) -> bool:
        name = generation_topic(self._base, generation)
        for p in range(listed[name]):
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(name, p), timeout=5.0, cached=False
            )
            if high >= self._limit:
                return True
        return False
