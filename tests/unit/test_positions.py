"""A collection's own offsets (shopvec.kafka.positions) with in-memory clients: where each
partition starts (its offset; the beginning where the collection holds nothing of it; the
shared group's for a collection older than its positions), what is recorded (only partitions
held, kept through a refused commit, committed again while quiet)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

import shopvec.kafka.positions as positions_module
from shopvec.kafka.positions import GroupPositions, positions_group
from shopvec.settings import Settings
from tests.unit.kafka_fakes import FakeMessage

PARTITIONS = 4


class _Group:
    """Committed offsets of groups by name, shared by every fake client."""

    def __init__(self) -> None:
        self.held: dict[str, dict[tuple[str, int], int]] = {}
        self.commits: list[dict[tuple[str, int], int]] = []
        self.refuse = False


class _Client:
    def __init__(self, world: _Group, conf: dict[str, Any]) -> None:
        self.world, self.group = world, conf["group.id"]

    def list_topics(self, topic: str, timeout: float) -> Any:
        parts = dict.fromkeys(range(PARTITIONS))
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=parts)})

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[Any]:
        held = self.world.held.get(self.group, {})
        return [
            SimpleNamespace(
                topic=tp.topic,
                partition=tp.partition,
                offset=held.get((tp.topic, tp.partition), -1001),
                error=None,
            )
            for tp in partitions
        ]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.world.refuse:
            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT))
        got = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        self.world.commits.append(got)
        self.world.held.setdefault(self.group, {}).update(got)

    def close(self) -> None:
        return None


GROUP = "shopvec-indexer.products_x"


def _positions(
    monkeypatch: pytest.MonkeyPatch, held: dict[str, dict[tuple[str, int], int]], **options: Any
) -> tuple[GroupPositions, _Group]:
    world = _Group()
    world.held = {g: dict(h) for g, h in held.items()}
    monkeypatch.setattr(positions_module, "Consumer", lambda conf: _Client(world, conf))
    return GroupPositions(Settings(), GROUP, shared_group="shopvec-indexer", **options), world


def _tps(*partitions: int) -> list[TopicPartition]:
    return [TopicPartition("p", q) for q in partitions]


def _msgs(partition: int, *offsets: int) -> list[Message]:
    return [cast(Message, FakeMessage(o, b"x", topic="p", partition=partition)) for o in offsets]


def test_the_group_is_named_after_the_collection() -> None:
    assert positions_group(Settings(), "products_x") == GROUP


def test_a_partition_starts_at_its_offset_or_at_the_beginning_if_the_collection_has_none(
    monkeypatch,
) -> None:
    """Partition 1 was empty while the reindex ran (or added since): the old model's
    indexers' offsets there are past events the collection never got."""
    positions, _ = _positions(
        monkeypatch, {GROUP: {("p", 0): 5}, "shopvec-indexer": {("p", 0): 9, ("p", 1): 9}}
    )
    assert positions.starts(_tps(0, 1)) == {("p", 0): 5, ("p", 1): OFFSET_BEGINNING}


def test_a_collection_older_than_its_positions_takes_over_the_shared_group_s(
    monkeypatch,
) -> None:
    positions, world = _positions(monkeypatch, {"shopvec-indexer": {("p", 0): 9, ("p", 2): 4}})
    assert positions.starts(_tps(0, 1)) == {("p", 0): 9, ("p", 1): OFFSET_BEGINNING}
    assert world.held[GROUP] == {("p", 0): 9, ("p", 2): 4}  # recorded as its own


def test_nothing_anywhere_starts_where_the_group_would(monkeypatch) -> None:
    positions, _ = _positions(monkeypatch, {})
    assert positions.starts(_tps(0, 1)) == {}


def test_an_offset_that_cannot_be_read_stops_the_assignment(monkeypatch) -> None:
    positions, _ = _positions(monkeypatch, {})

    def failing(partitions: list[TopicPartition], timeout: float) -> list[Any]:
        error = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE)
        return [SimpleNamespace(topic="p", partition=0, offset=-1001, error=error)]

    positions._consumer.committed = failing  # type: ignore[method-assign]
    with pytest.raises(KafkaException):
        positions.starts(_tps(0))


def test_only_partitions_held_are_recorded(monkeypatch) -> None:
    """A batch of a partition lost meanwhile finishes after the loss: recording it would pull
    the new owner's position back."""
    positions, world = _positions(monkeypatch, {GROUP: {("p", 0): 1}})
    positions.starts(_tps(0, 1))
    positions.advance(_msgs(0, 3, 4) + _msgs(1, 9))
    positions.drop(_tps(1))
    positions.advance(_msgs(1, 10))
    positions.commit(force=True)
    assert world.commits == [{("p", 0): 5}]
    positions.commit(force=True)
    assert len(world.commits) == 1  # nothing new


def test_a_refused_commit_keeps_the_offsets_for_the_next(monkeypatch) -> None:
    positions, world = _positions(monkeypatch, {GROUP: {("p", 0): 1}})
    positions.starts(_tps(0))
    positions.advance(_msgs(0, 7))
    world.refuse = True
    positions.commit(force=True)
    world.refuse = False
    positions.commit(force=True)
    assert world.held[GROUP][("p", 0)] == 8


def test_commits_run_in_the_background_and_quiet_partitions_are_committed_again(
    monkeypatch,
) -> None:
    positions, world = _positions(
        monkeypatch, {GROUP: {("p", 0): 5, ("p", 1): 6}}, interval_s=0.01, refresh_s=0.01
    )
    positions.starts(_tps(0, 1))
    positions.drop(_tps(1))
    positions.commit()
    deadline = time.monotonic() + 5
    while not world.commits and time.monotonic() < deadline:
        time.sleep(0.01)
    positions.close()
    assert world.commits and all(c == {("p", 0): 5} for c in world.commits)
