"""How far an output has taken a topic, kept in a consumer group of the output's own.

The indexers of one deployment share the product topic's partitions through one group
(SHOPVEC_INDEXER__GROUP_ID: what KEDA reads the lag of and the ACLs name). Its committed offsets
say how far the indexers that held each partition last got, whatever collection they wrote:
after a change of model, the offsets the old model's indexers committed while the new
collection was being filled by `shopvec reindex` are past events the new collection never
received. So each collection also has a group that no consumer joins but `shopvec reindex`
(`positions_group`): the offsets below which that collection holds every event. An indexer
commits to it what it stores for its own group, and on each assignment starts a partition from
its collection's offset where there is one, from its group's otherwise (a collection that
predates these positions). Partitions that move between the old model's indexers and the new
one's during a rollout then replay into each collection what that collection lacks, and never
skip it: writes are idempotent by version, so a replay costs reading, not encoding.

Kafka drops an empty group's offsets `offsets.retention.minutes` (7 days by default) after
they were committed. Indexers commit the offsets of the partitions they hold again every hour,
however quiet; between the end of a reindex and the new model's indexers no one does, so they
must start within that time, or the partitions that had no event meanwhile start from the
shared group's offsets again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from shopvec.kafka.config import common_config
from shopvec.settings import Settings

__all__ = ["GroupPositions", "Positions", "positions_group"]

log = logging.getLogger(__name__)

Key = tuple[str, int]


def positions_group(settings: Settings, collection: str) -> str:
    """The group whose offsets are how far `collection` holds the product topic."""
    return f"{settings.indexer.group_id}.{collection}"


class Positions(Protocol):
    """Where an output stands, apart from the consumer group the runtime belongs to. All calls
    come from the runtime's own thread."""

    def starts(self, partitions: Sequence[TopicPartition]) -> dict[Key, int]:
        """The offsets to start these partitions at, where the output has them (a logical
        offset, such as OFFSET_BEGINNING, is taken too)."""
        ...

    def advance(self, messages: Iterable[Message]) -> None:
        """These messages' effects are done: the output now holds them."""
        ...

    def commit(self, *, force: bool = False) -> None:
        """Records what advanced (at most once a second unless forced)."""
        ...

    def drop(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions no longer held: nothing more is recorded for them."""
        ...

    def close(self) -> None: ...


class GroupPositions:
    """Positions kept as the committed offsets of a consumer group that this process never
    joins: a commit without a member id, which Kafka takes while the group has no members
    (and refuses, harmlessly, while `shopvec reindex` is one of them)."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        *,
        interval_s: float = 1.0,
        refresh_s: float = 3600.0,
        timeout_s: float = 10.0,
    ) -> None:
        """refresh_s: how often the offsets of partitions held but quiet are committed again.
        Kafka drops a group's committed offsets once the group has had no members for
        `offsets.retention.minutes` (7 days by default), counted from each commit, and this
        group never has members."""
        conf = common_config(settings)
        conf.update({"group.id": group_id, "enable.auto.commit": False})
        self.group_id = group_id
        self._consumer = Consumer(conf)
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._pending: dict[Key, int] = {}
        self._known: dict[Key, int] = {}
        """The last offset read or committed of each partition held."""
        self._last = self._refreshed = time.monotonic()
        self._failing = False

    def starts(self, partitions: Sequence[TopicPartition]) -> dict[Key, int]:
        """Raises KafkaException when the group's offsets cannot be read: starting from the
        shared group's instead could skip what this output lacks."""
        asked = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        if not asked:
            return {}
        out = {}
        for tp in self._consumer.committed(asked, timeout=self._timeout_s):
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        self._known.update(out)
        return out

    def advance(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            offset = msg.offset()
            if offset is None or offset < 0:
                continue
            key = (msg.topic() or "", msg.partition() or 0)
            self._pending[key] = max(self._pending.get(key, 0), offset + 1)

    def commit(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._refreshed >= self._refresh_s:
            self._refreshed = now
            self._pending = {**self._known, **self._pending}
        if not self._pending or (not force and now - self._last < self._interval_s):
            return
        self._last = now
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Kept for the next try; until then a restart replays a little more. Refused for
            # as long as a reindex of the collection runs: said once.
            if not self._failing:
                log.warning("positions of %s not recorded (trying again): %s", self.group_id, exc)
            self._failing = True
            return
        if self._failing:
            log.info("positions of %s recorded again", self.group_id)
            self._failing = False
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self._known[key] = tp.offset
            if self._pending.get(key) == tp.offset:
                del self._pending[key]

    def drop(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)
            self._known.pop((tp.topic, tp.partition), None)

    def close(self) -> None:
        try:
            self.commit(force=True)
        finally:
            self._consumer.close()
