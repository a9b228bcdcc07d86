"""How far an output has taken a topic, kept in a consumer group of the output's own.

The indexers of one deployment share the product topic's partitions through one group
(SHOPVEC_INDEXER__GROUP_ID: what KEDA reads the lag of and the ACLs name). Its committed offsets
say how far the indexers that held each partition last got, whatever collection they wrote:
after a change of model, the offsets the old model's indexers committed while the new
collection was being filled by `shopvec reindex` are past events the new collection never
received. So each collection also has a group that no consumer ever joins (`positions_group`):
its committed offsets are those below which the collection holds every event. The reindex and
the indexers commit to it, without a member id, what they have written; on each assignment an
indexer starts every partition from its collection's offset there. Partitions that move between
the old model's indexers and the new one's during a rollout then replay into each collection
what it lacks, and never skip it: writes are idempotent by version, so a replay of what a
collection holds costs reading, not encoding.

A partition without an offset of its collection's, where the collection has offsets for other
partitions, is one it holds nothing of (empty while the reindex ran, added since, or not
reached by a reindex cut short): it starts at the beginning. A reindex records every
partition's first offset before it reads anything, so a collection without any offsets
predates them: its indexers take over the shared group's offsets (and record them), as before.

Kafka drops the committed offsets of a group without members `offsets.retention.minutes`
(7 days by default) after each commit. Indexers commit the offsets of the partitions they hold
again every hour, however quiet; between the end of a reindex and the new model's indexers no
one does, so they must start within that time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from shopvec.kafka.config import common_config
from shopvec.settings import Settings

__all__ = ["GroupPositions", "Positions", "positions_group"]

log = logging.getLogger(__name__)

Key = tuple[str, int]


def positions_group(settings: Settings, collection: str) -> str:
    """The group whose offsets are how far `collection` holds the product topic."""
    return f"{settings.indexer.group_id}.{collection}"


class Positions(Protocol):
    """Where an output stands, apart from the consumer group the runtime belongs to. Called
    from the runtime's own thread."""

    def starts(self, partitions: Sequence[TopicPartition]) -> dict[Key, int]:
        """The offsets to start these newly assigned partitions at, where the output has them
        (a logical offset, such as OFFSET_BEGINNING, is taken too)."""
        ...

    def advance(self, messages: Iterable[Message]) -> None:
        """These messages' effects are done: the output now holds them."""
        ...

    def commit(self, *, force: bool = False) -> None:
        """Records what advanced: in the background, or before returning when forced."""
        ...

    def drop(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions no longer held: nothing more is recorded for them."""
        ...

    def close(self) -> None: ...


class GroupPositions:
    """Positions kept as the committed offsets of a consumer group that no consumer joins:
    commits without a member id, which Kafka takes from any number of clients.

    Commits run on a thread of their own (at most once an interval), so that a broker slow to
    answer does not hold up the runtime; those of a revoke or a close are made before
    returning. `shared_group`: the runtime's own group, whose offsets a collection without any
    positions takes over."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        *,
        shared_group: str | None = None,
        interval_s: float = 1.0,
        refresh_s: float = 3600.0,
        timeout_s: float = 10.0,
    ) -> None:
        """refresh_s: how often the offsets of partitions held but quiet are committed again,
        so that Kafka's offset retention never drops them while they are held."""
        conf = common_config(settings)
        conf.update({"group.id": group_id, "enable.auto.commit": False})
        self.group_id = group_id
        self._conf = conf
        self._shared_group = shared_group
        self._consumer = Consumer(conf)
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        """Guards what follows; `_calls` serialises the calls on the client."""
        self._calls = threading.Lock()
        self._held: set[Key] = set()
        self._pending: dict[Key, int] = {}
        self._known: dict[Key, int] = {}
        """The last offset read or committed of each partition held."""
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- on the runtime's thread -----------------------------------------------------------

    def starts(self, partitions: Sequence[TopicPartition]) -> dict[Key, int]:
        """Raises KafkaException when the offsets cannot be read: starting from the shared
        group's instead could skip what this output lacks (the exception leaves the runtime,
        and the worker restarts)."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        out: dict[Key, int] = {}
        for topic in dict.fromkeys(t for t, _ in keys):
            everywhere = self._committed(self._consumer, topic)
            if not everywhere and self._shared_group is not None:
                everywhere = self._adopt(topic)
            for key in (k for k in keys if k[0] == topic):
                if key in everywhere:
                    out[key] = everywhere[key]
                elif everywhere:
                    out[key] = OFFSET_BEGINNING
        with self._lock:
            self._held.update(keys)
            self._known.update({k: o for k, o in out.items() if o >= 0})
        return out

    def record(self, offsets: dict[Key, int]) -> None:
        """Commits these offsets now, whatever was recorded before; raises KafkaException when
        the broker does not take them."""
        with self._calls:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )

    def hold(self, partitions: Sequence[TopicPartition]) -> None:
        """Records these partitions as held, without reading where they start."""
        with self._lock:
            self._held.update((tp.topic, tp.partition) for tp in partitions)

    def advance(self, messages: Iterable[Message]) -> None:
        with self._lock:
            for msg in messages:
                offset, key = msg.offset(), (msg.topic() or "", msg.partition() or 0)
                # A batch of a partition lost meanwhile is not recorded: its new owner may be
                # further on, and this offset would pull it back.
                if offset is None or offset < 0 or key not in self._held:
                    continue
                self._pending[key] = max(self._pending.get(key, 0), offset + 1)

    def commit(self, *, force: bool = False) -> None:
        if force:
            self._flush()
        elif self._thread is None:
            self._thread = threading.Thread(target=self._run, name="positions-commit", daemon=True)
            self._thread.start()

    def drop(self, partitions: Sequence[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._held.discard(key)
                self._pending.pop(key, None)
                self._known.pop(key, None)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        try:
            self._flush()
        finally:
            with self._calls:
                self._consumer.close()

    # -- reading and committing ------------------------------------------------------------

    def _committed(self, consumer: Consumer, topic: str) -> dict[Key, int]:
        """A group's committed offsets in every partition of the topic (where it has any)."""
        with self._calls:
            meta = consumer.list_topics(topic, timeout=self._timeout_s)
            asked = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
            got = consumer.committed(asked, timeout=self._timeout_s) if asked else []
        out = {}
        for tp in got:
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    def _adopt(self, topic: str) -> dict[Key, int]:
        """A collection older than its positions: the shared group's offsets are its own (its
        indexers were that group's members), so they are recorded as its positions."""
        assert self._shared_group is not None
        shared = Consumer({**self._conf, "group.id": self._shared_group})
        try:
            found = self._committed(shared, topic)
        finally:
            shared.close()
        if found:
            self.record(found)
            log.info("%s takes over the offsets of %s", self.group_id, self._shared_group)
        return found

    def _run(self) -> None:
        last_refresh = 0.0
        while not self._stop.wait(self._interval_s):
            last_refresh += self._interval_s
            if last_refresh >= self._refresh_s:
                last_refresh = 0.0
                with self._lock:
                    self._pending = {**self._known, **self._pending}
            self._flush()

    def _flush(self) -> None:
        # Taken, committed and booked holding the client, so that two commits (the background
        # one and a revoke's) land in the order their offsets were taken: never an older last.
        with self._calls:
            with self._lock:
                offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
            if not offsets:
                return
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except (KafkaException, RuntimeError) as exc:
                # Kept for the next try; until then a restart replays a little more.
                if not self._failing:
                    log.warning(
                        "positions of %s not recorded (trying again): %s", self.group_id, exc
                    )
                self._failing = True
                return
            if self._failing:
                log.info("positions of %s recorded again", self.group_id)
                self._failing = False
            with self._lock:
                for tp in offsets:
                    key = (tp.topic, tp.partition)
                    if key not in self._held:
                        continue
                    self._known[key] = tp.offset
                    if self._pending.get(key) == tp.offset:
                        del self._pending[key]
