"""The search requests topic in generations (shopvec.kafka.generations), with the broker's
topics as a dictionary and a clock by hand: where clients send, what workers read, when a new
standby is made and when a retired generation is deleted."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka import Consumer

from shopvec.kafka import generations
from shopvec.kafka.generations import (
    RequestTopic,
    RequestTopics,
    current_generation,
    generation_topic,
    generations_of,
)
from shopvec.kafka.stream import StreamRuntime
from shopvec.settings import KafkaSettings, QuerySettings, Settings, TopicSettings
from tests.unit.kafka_fakes import FakeConsumer

BASE = "req"


class Broker:
    """Topics with their partition counts; create and delete as the admin calls do."""

    def __init__(self, *names: str, partitions: int = 2) -> None:
        self.topics = dict.fromkeys(names, partitions)
        self.created: list[str] = []
        self.deleted: list[str] = []

    def create(self, settings: Settings, name: str, partitions: int = 1, *a: Any) -> bool:
        if name in self.topics:
            return False
        self.topics[name] = partitions
        self.created.append(name)
        return True

    def delete(self, settings: Settings, names: list[str], **kw: Any) -> None:
        for name in names:
            self.topics.pop(name, None)
            self.deleted.append(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    b = Broker(BASE)
    monkeypatch.setattr(generations, "create_topic", b.create)
    monkeypatch.setattr(generations, "delete_topics", b.delete)
    return b


def _settings(limit: int = 5) -> Settings:
    return Settings(
        kafka=KafkaSettings(request_topic_records=limit),
        topics=TopicSettings(search_requests=BASE),
        query=QuerySettings(max_request_age_s=30.0),
    )


def test_generation_names_and_which_one_is_current() -> None:
    assert [generation_topic(BASE, g) for g in (0, 1, 12)] == ["req", "req.g1", "req.g12"]
    names = ["req.g2", "req", "req.g10", "req.g0", "req.g01", "req.gx", "other.g1", "req2"]
    assert generations_of(BASE, names) == [0, 2, 10]
    assert generations_of("a.b", ["aXb", "a.b.g1"]) == [1]
    # Whatever number a generation made by hand has, the one after it counts too.
    assert generations_of(BASE, ["req.g999999999", "req.g1000000000"]) == [999999999, 10**9]
    assert current_generation([0]) == 0
    assert current_generation([0, 1]) == 0
    assert current_generation([3, 4, 5]) == 4


def test_without_a_limit_there_is_one_topic_and_the_broker_is_not_asked(broker) -> None:
    asked: list[int] = []
    client = RequestTopic(_settings(0), lambda: asked.append(1) or broker.topics)
    assert client.name() == BASE
    workers = RequestTopics(_settings(0), cast(Consumer, FakeConsumer()), topics=client._list)
    assert workers.topics() == [BASE]
    assert not asked and not broker.created


def test_a_client_sends_to_the_one_before_the_standby_and_moves_on_when_it_fills(broker):
    clock = Clock()
    client = RequestTopic(_settings(), lambda: broker.topics, clock=clock)
    assert client.name() == "req"  # the only one
    broker.create(_settings(), "req.g1", 2)
    assert client.name() == "req"  # not asked again within refresh_s
    clock.now += 10
    assert client.name() == "req"  # the standby is not sent to
    client.acknowledged("req", 3)
    assert client.name() == "req" and not broker.created[1:]
    client.acknowledged("req", 4)  # the 5th record of a partition: full
    clock.now += 1  # asked at most once a second
    assert client.name() == "req.g1"
    assert broker.created == ["req.g1", "req.g2"] and broker.topics["req.g2"] == 2
    # Another client made the next standby meanwhile: found by asking again, made once.
    other = RequestTopic(_settings(), lambda: broker.topics, clock=clock)
    other.acknowledged("req", 9)
    assert other.name() == "req.g1"
    assert broker.created == ["req.g1", "req.g2"]


def test_a_client_that_cannot_reach_the_broker_keeps_sending_where_it_did(broker) -> None:
    clock = Clock()
    broker.create(_settings(), "req.g1", 2)
    broker.create(_settings(), "req.g2", 2)
    up = {"ok": True}

    def listed() -> dict[str, int]:
        if not up["ok"]:
            raise RuntimeError("broker down")
        return broker.topics

    asked = []
    client = RequestTopic(_settings(), lambda: asked.append(1) or listed(), clock=clock)
    assert client.name() == "req.g1"
    up["ok"] = False
    clock.now += 11
    assert client.name() == "req.g1" and len(asked) == 2
    # Full, with the broker not answering: asked again a second later, not at every send.
    client.acknowledged("req.g1", 4)
    clock.now += 1
    assert [client.name() for _ in range(50)] == ["req.g1"] * 50 and len(asked) == 3
    clock.now += 1
    up["ok"] = True
    assert client.name() == "req.g2" and len(asked) == 4


def test_workers_make_the_standby_read_three_generations_and_delete_retired_ones(broker):
    clock = Clock()
    consumer = FakeConsumer()
    workers = RequestTopics(
        _settings(),
        cast(Consumer, consumer),
        clock=clock,
        topics=lambda: broker.topics,
        unsubscribe_after_s=40,
        delete_after_s=60,
    )
    # At start the standby is made ahead.
    assert workers.topics() == ["req", "req.g1"] and broker.created == ["req.g1"]
    # The current generation fills (its end offsets, as an aged stack's would be).
    consumer.ends[("req", 1)] = 5
    clock.now += 5
    assert workers.topics() == ["req", "req.g1", "req.g2"]
    consumer.ends[("req.g1", 0)] = 7
    clock.now += 5
    assert workers.topics() == ["req", "req.g1", "req.g2", "req.g3"]
    retired_at = clock.now
    # The oldest is read on for unsubscribe_after_s, then deleted delete_after_s later.
    clock.now = retired_at + 35
    assert workers.topics()[0] == "req"
    clock.now = retired_at + 40
    assert workers.topics() == ["req.g1", "req.g2", "req.g3"] and not broker.deleted
    clock.now = retired_at + 100
    assert workers.topics() == ["req.g1", "req.g2", "req.g3"]
    assert broker.deleted == ["req"] and "req" not in broker.topics


def test_workers_starting_on_a_full_topic_move_requests_on_at_once(broker) -> None:
    consumer = FakeConsumer()
    consumer.ends[("req", 0)] = 25_000  # a stack that ran without generations
    workers = RequestTopics(_settings(), cast(Consumer, consumer), topics=lambda: broker.topics)
    assert workers.topics() == ["req", "req.g1", "req.g2"]
    assert RequestTopic(_settings(), lambda: broker.topics).name() == "req.g1"


def test_workers_read_on_what_they_read_when_the_broker_does_not_answer(broker) -> None:
    clock = Clock()
    up = {"ok": True}

    def listed() -> dict[str, int]:
        if not up["ok"]:
            raise RuntimeError("broker down")
        return broker.topics

    workers = RequestTopics(_settings(), cast(Consumer, FakeConsumer()), clock=clock, topics=listed)
    assert workers.topics() == ["req", "req.g1"]
    up["ok"] = False
    clock.now += 5
    assert workers.topics() == ["req", "req.g1"]


def test_the_runtime_subscribes_again_only_when_its_topics_change() -> None:
    from tests.unit.test_stream_runtime import Recorder, _runtime

    runtime, consumer, _, _ = _runtime(Recorder())
    wanted = [["a"], ["a"], ["a", "b"], ["a", "b"], ["b"]]

    class Changing:
        def topics(self) -> list[str]:
            return wanted.pop(0)

    runtime._topic = Changing()
    for _ in range(5):
        runtime._follow()
    assert consumer.subscriptions == [["a"], ["a", "b"], ["b"]]
    assert isinstance(runtime, StreamRuntime)
