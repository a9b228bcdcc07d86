"""A collection's own offsets (shopvec.kafka.positions) with an in-memory consumer: read where
committed, recorded no faster than once a second unless forced, kept through a refused commit,
and committed again while quiet so that Kafka's offset retention does not drop them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from shopvec.kafka.positions import GroupPositions, positions_group
from shopvec.settings import Settings
from tests.unit.kafka_fakes import FakeMessage


class _Committer:
    def __init__(self, held: dict[tuple[str, int], int]) -> None:
        self.held = dict(held)
        self.commits: list[dict[tuple[str, int], int]] = []
        self.refuse = False

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.held.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.refuse:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
        got = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        self.commits.append(got)
        self.held.update(got)

    def close(self) -> None:
        return None


def _positions(held: dict[tuple[str, int], int], **options: Any) -> tuple[GroupPositions, Any]:
    positions = GroupPositions(Settings(), "shopvec-indexer.products_x", **options)
    fake = _Committer(held)
    positions._consumer = cast(Any, fake)
    return positions, fake


def _msgs(partition: int, *offsets: int) -> list[Message]:
    return [cast(Message, FakeMessage(o, b"x", topic="p", partition=partition)) for o in offsets]


def test_the_group_is_named_after_the_collection() -> None:
    assert positions_group(Settings(), "products_x") == "shopvec-indexer.products_x"


def test_starts_are_the_committed_offsets_where_there_are_any() -> None:
    positions, _ = _positions({("p", 0): 5})
    assert positions.starts([TopicPartition("p", 0), TopicPartition("p", 1)]) == {("p", 0): 5}


def test_an_offset_that_cannot_be_read_stops_the_assignment() -> None:
    positions, fake = _positions({})

    def failing(partitions: list[TopicPartition], timeout: float) -> list[Any]:
        error = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE)
        return [SimpleNamespace(topic="p", partition=0, offset=-1001, error=error)]

    fake.committed = failing
    with pytest.raises(KafkaException):
        positions.starts([TopicPartition("p", 0)])


def test_what_advanced_is_committed_at_most_once_an_interval_unless_forced() -> None:
    positions, fake = _positions({}, interval_s=3600)
    positions.advance(_msgs(0, 3, 4) + _msgs(1, 9))
    positions.commit()
    assert fake.commits == []
    positions.commit(force=True)
    assert fake.commits == [{("p", 0): 5, ("p", 1): 10}]
    positions.commit(force=True)
    assert len(fake.commits) == 1  # nothing new


def test_a_refused_commit_keeps_the_offsets_for_the_next() -> None:
    positions, fake = _positions({})
    positions.advance(_msgs(0, 7))
    fake.refuse = True
    positions.commit(force=True)
    fake.refuse = False
    positions.commit(force=True)
    assert fake.held[("p", 0)] == 8


def test_quiet_partitions_are_committed_again_and_dropped_ones_are_not() -> None:
    positions, fake = _positions({("p", 0): 5, ("p", 1): 6}, refresh_s=0.0)
    positions.starts([TopicPartition("p", 0), TopicPartition("p", 1)])
    positions.drop([TopicPartition("p", 1)])
    positions.commit(force=True)
    assert fake.commits == [{("p", 0): 5}]
