"""The stream runtime with in-memory Kafka clients: offsets after effects and in order, bounded
dead letters that cannot stop the worker, oversize refused at the door, a failing batch split
until only the failing message is dead-lettered, and the query worker's reply-topic guard."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry
from pymilvus.exceptions import DataNotMatchException

from schemas.dead_letter import DeadLetter
from schemas.search import SearchReply, SearchRequest
from schemas.wire import HEADER_CORRELATION_ID, HEADER_REPLY_TOPIC
from shopvec.kafka.batch import Batch, StreamMetrics
from shopvec.kafka.dead_letters import DeadLetterSink
from shopvec.kafka.health import Health
from shopvec.kafka.loop import Retrier
from shopvec.kafka.stream import StreamRuntime
from shopvec.kafka.topics import TopicGuard
from shopvec.metrics import QueryMetrics
from shopvec.search import worker as worker_module
from shopvec.search.service import SearchService
from shopvec.search.worker import QueryWorker
from tests.unit.kafka_fakes import FakeConsumer, FakeMessage, FakeProducer

DEAD = "dead"


class Recorder:
    """A handler that applies each item at once; fails on the values in `bad`."""

    def __init__(self, bad: Callable[[str], bool] = lambda v: False) -> None:
        self.applied: list[str] = []
        self.bad = bad
        self.calls = 0

    def decode(self, msg: Message) -> str:
        value = (msg.value() or b"").decode()
        if value.startswith("{"):
            json.loads(value)  # malformed JSON fails here, in decode
        return value

    def submit(self, batch: Batch[str]) -> None:
        self.calls += 1
        values = [v for _, v in batch.items]
        if any(self.bad(v) for v in values):
            raise ValueError(f"cannot apply {values}")
        self.applied += values
        batch.finish()

    def tick(self) -> None:
        return None

    def close(self) -> None:
        return None


def _runtime(
    handler: Any,
    producer: FakeProducer | None = None,
    *,
    max_message_bytes: int = 1024 * 1024,
    dead_letter_max_bytes: int = 64 * 1024,
    fault_after: int = 5,
    max_in_flight: int = 1,
    pause_after_s: float = 10.0,
    weigh: Callable[[Any], int] | None = None,
    positions: Any = None,
) -> tuple[StreamRuntime[Any], FakeConsumer, FakeProducer, StreamMetrics]:
    consumer, producer = FakeConsumer(), producer or FakeProducer()
    metrics = StreamMetrics("test", CollectorRegistry())
    sink = DeadLetterSink(
        cast(Producer, producer),
        DEAD,
        "test",
        max_bytes=dead_letter_max_bytes,
        on_skip=lambda r, why: metrics.skipped.labels(worker="test", kind=r.error_kind).inc(),
    )
    runtime = StreamRuntime(
        worker="test",
        consumer=cast(Consumer, consumer),
        topic="in",
        handler=handler,
        dead_letters=sink,
        metrics=metrics,
        retry=Retrier(Health(), max_delay_s=0.01),
        max_message_bytes=max_message_bytes,
        size_setting="SHOPVEC_TEST__MAX",
        batch_size=16,
        batch_wait_s=0.0,
        system_fault_after=fault_after,
        fault_backoff_s=0.01,
        max_in_flight=max_in_flight,
        pause_after_s=pause_after_s,
        weigh=weigh,
        positions=positions,
    )
    return runtime, consumer, producer, metrics


def _dead_letters(producer: FakeProducer) -> list[DeadLetter]:
    return [DeadLetter.from_bytes(v) for v in producer.on(DEAD)]


def _count(metrics: StreamMetrics, name: str, kind: str) -> float:
    value = metrics.registry.get_sample_value(f"{name}_total", {"worker": "test", "kind": kind})
    return value or 0.0


def _msgs(*values: bytes | str) -> list[Message]:
    return [
        cast(Message, FakeMessage(i, v.encode() if isinstance(v, str) else v))
        for i, v in enumerate(values)
    ]


class FakePositions:
    """An output's own offsets (shopvec.kafka.positions), in memory."""

    def __init__(self, held: dict[tuple[str, int], int]) -> None:
        self.held = dict(held)
        self.pending: dict[tuple[str, int], int] = {}
        self.forced = 0

    def starts(self, partitions: Sequence[TopicPartition]) -> dict[tuple[str, int], int]:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        return {k: self.held[k] for k in keys if k in self.held}

    def advance(self, messages: Sequence[Message]) -> None:
        for m in messages:
            key = (m.topic() or "", m.partition() or 0)
            self.pending[key] = max(self.pending.get(key, 0), (m.offset() or 0) + 1)

    def commit(self, *, force: bool = False) -> None:
        self.forced += force
        self.held.update(self.pending)
        self.pending.clear()

    def drop(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self.pending.pop((tp.topic, tp.partition), None)

    def close(self) -> None:
        self.commit(force=True)


def test_partitions_start_from_the_output_s_own_offsets_and_record_them() -> None:
    """Where the output has an offset its partition starts there, elsewhere at the group's
    (OFFSET_INVALID); each finished batch's offsets are recorded for it, at revoke at once."""
    positions = FakePositions({("in", 0): 7})
    runtime, consumer, _, _ = _runtime(Recorder(), positions=positions)
    assigned = [TopicPartition("in", 0), TopicPartition("in", 1)]
    runtime._on_assign(cast(Consumer, consumer), assigned)
    assert consumer.assigned_at == {("in", 0): 7, ("in", 1): OFFSET_INVALID}
    runtime.process([cast(Message, FakeMessage(o, b"x")) for o in (7, 8)])
    assert positions.pending == {("in", 0): 9}
    runtime.turn()
    assert positions.held[("in", 0)] == 9
    runtime.process([cast(Message, FakeMessage(9, b"y"))])
    runtime._on_revoke(cast(Consumer, consumer), assigned)
    assert positions.forced == 1 and positions.held[("in", 0)] == 10


# -- the door and the dead letters -------------------------------------------------------------


def test_an_oversize_message_is_refused_unread_and_the_rest_applied() -> None:
    handler = Recorder()
    runtime, consumer, producer, metrics = _runtime(handler, max_message_bytes=1000)
    runtime.process(_msgs("a", b"x" * 5000, "b"))
    assert handler.applied == ["a", "b"]
    (dead,) = _dead_letters(producer)
    assert dead.error_kind == "oversize" and "SHOPVEC_TEST__MAX" in dead.error_message
    assert dead.value_size == 5000 and dead.value == b"x" * 5000
    assert consumer.stored == [0, 1, 2]
    assert _count(metrics, "shopvec_dead_lettered", "oversize") == 1


def test_a_dead_letter_is_cut_to_its_bound_with_the_size_and_hash_of_the_whole() -> None:
    big = b"{" + b"y" * (900 * 1024)  # malformed JSON of 0.9 MB
    runtime, consumer, producer, _ = _runtime(Recorder(), dead_letter_max_bytes=64 * 1024)
    runtime.process(_msgs(big))
    (raw,) = producer.on(DEAD)
    assert len(raw) <= 64 * 1024
    dead = DeadLetter.from_bytes(raw)
    assert dead.error_kind == "unprocessable" and dead.value_truncated
    assert dead.value_size == len(big)
    assert dead.value_sha256 == hashlib.sha256(big).hexdigest()
    assert dead.value is not None and big.startswith(dead.value) and len(dead.value) > 1000
    assert consumer.stored == [0]


def test_a_dead_letter_the_broker_refuses_goes_again_without_the_original() -> None:
    producer = FakeProducer()
    producer.refuse_over[DEAD] = 2000  # the dead-letter topic takes less than the bound
    runtime, consumer, _, _ = _runtime(Recorder(), producer)
    runtime.process(_msgs("{" + "z" * 10_000))
    (dead,) = _dead_letters(producer)
    assert dead.value_base64 is None and dead.value_truncated and dead.value_size == 10_001
    assert consumer.stored == [0]


def test_a_message_that_cannot_even_be_dead_lettered_is_skipped_and_counted() -> None:
    producer = FakeProducer()
    producer.fail_delivery[DEAD] = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    handler = Recorder()
    runtime, consumer, _, metrics = _runtime(handler, producer)
    runtime.process(_msgs("{broken", "fine"))
    assert handler.applied == ["fine"]
    assert consumer.stored == [0, 1]
    assert _count(metrics, "shopvec_skipped", "unprocessable") == 1


# -- failing batches -----------------------------------------------------------------------------


def test_a_failing_batch_is_split_and_only_the_failing_message_dead_lettered() -> None:
    handler = Recorder(bad=lambda v: v == "poison")
    runtime, consumer, producer, _ = _runtime(handler)
    runtime.process(_msgs("a", "poison", "b"))
    assert handler.applied == ["a", "b"]
    (dead,) = _dead_letters(producer)
    assert dead.offset == 1 and "cannot apply" in dead.error_message
    assert sorted(set(consumer.stored)) == [0, 1, 2] and consumer.stored[-1] == 2
    assert runtime.health.reason is None


def test_a_dead_letter_says_what_failed_though_the_exception_s_repr_is_empty() -> None:
    class Refused(Recorder):
        def submit(self, batch: Batch[str]) -> None:
            raise DataNotMatchException(message="the length (1181) exceeds max length (1024)")

    runtime, _, producer, _ = _runtime(Refused())
    runtime.process(_msgs("a"))
    (dead,) = _dead_letters(producer)
    assert dead.error_message == (
        "test: <DataNotMatchException: (code=1, message=the length (1181) exceeds max length "
        "(1024))>"
    )


def test_when_every_message_fails_alone_the_system_is_at_fault_not_the_messages() -> None:
    broken = threading.Event()
    broken.set()
    handler = Recorder(bad=lambda v: broken.is_set())
    runtime, _, producer, _ = _runtime(handler, fault_after=2)
    runtime.health.assigned.set()
    runtime.process(_msgs("a"))
    assert len(_dead_letters(producer)) == 1  # one failure alone is the message's
    runtime.process(_msgs("b"))
    assert len(_dead_letters(producer)) == 1  # the second in a row is not dead-lettered
    assert not runtime.health.ready() and "in a row" in (runtime.health.reason or "")
    broken.clear()  # the store is back: the same message goes through, after the backoff
    time.sleep(0.05)
    runtime.turn()
    assert handler.applied == ["b"] and runtime.health.ready()


def test_transient_failures_are_retried_never_dead_lettered() -> None:
    failures = iter([ConnectionError("milvus away"), TimeoutError("slow")])

    class Flaky(Recorder):
        def submit(self, batch: Batch[str]) -> None:
            def attempt() -> None:
                failure = next(failures, None)
                if failure is not None:
                    raise failure

            runtime.retry(attempt)
            super().submit(batch)

    handler = Flaky()
    runtime, consumer, producer, _ = _runtime(handler)
    runtime.process(_msgs("a"))
    assert handler.applied == ["a"] and producer.on(DEAD) == []
    assert consumer.stored == [0]


# -- backpressure ------------------------------------------------------------------------------


class Holder(Recorder):
    """Finishes its batches only when told to, as the indexer's pipeline does on its threads."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Batch[str]] = []

    def submit(self, batch: Batch[str]) -> None:
        self.calls += 1
        self.held.append(batch)

    def release(self) -> None:
        batch = self.held.pop(0)
        self.applied += [v for _, v in batch.items]
        batch.finish()


def _full(pause_after_s: float) -> tuple[StreamRuntime[Any], FakeConsumer, Holder]:
    handler = Holder()
    runtime, consumer, _, _ = _runtime(handler, max_in_flight=2, pause_after_s=pause_after_s)
    runtime.process(_msgs("a"))
    runtime.process([cast(Message, FakeMessage(1, b"b"))])
    return runtime, consumer, handler


def test_a_full_pipeline_waits_for_the_handler_without_pausing() -> None:
    """Pausing would drop what the consumer fetched ahead; a batch that finishes in time
    lets the runtime go on without it."""
    runtime, consumer, handler = _full(pause_after_s=10.0)
    timer = threading.Timer(0.1, handler.release)
    timer.start()
    started = time.monotonic()
    runtime._backpressure()
    timer.join()
    assert time.monotonic() - started < 5
    assert consumer.pauses == 0 and not consumer.paused
    assert consumer.stored == [0] and len(handler.held) == 1


def test_a_pipeline_full_for_long_pauses_its_partitions_until_a_batch_finishes() -> None:
    runtime, consumer, handler = _full(pause_after_s=0.05)
    runtime._backpressure()
    assert consumer.paused and consumer.pauses == 1 and consumer.stored == []
    handler.release()
    runtime._backpressure()
    assert not consumer.paused and consumer.stored == [0]


def test_a_worker_asked_to_stop_stops_waiting_for_a_full_pipeline() -> None:
    runtime, consumer, _ = _full(pause_after_s=60.0)
    threading.Timer(0.1, runtime._stop.set).start()
    started = time.monotonic()
    runtime._backpressure()
    assert time.monotonic() - started < 2 and consumer.pauses == 0


# -- weighed batches ---------------------------------------------------------------------------


def _weighed(max_in_flight: int) -> tuple[StreamRuntime[Any], FakeConsumer, FakeProducer, Holder]:
    """batch_size 16; an item "wN" weighs N."""
    handler = Holder()
    runtime, consumer, producer, _ = _runtime(
        handler,
        max_in_flight=max_in_flight,
        weigh=lambda v: int(v[1:]) if v.startswith("w") else 1,
    )
    return runtime, consumer, producer, handler


def test_a_poll_of_heavy_items_is_handed_over_as_batches_of_bounded_weight() -> None:
    runtime, consumer, producer, handler = _weighed(max_in_flight=1)
    runtime.process(_msgs("w8", "w8", "{bad", "w8", "a", "w30", "b"))
    # 8 + 8, then 8 + 1, then 30 alone (heavier than a batch, never split), then 1; only one
    # handed over at a time, the next when it finishes.
    assert [[v for _, v in b.items] for b in handler.held] == [["w8", "w8"]]
    seen = []
    while handler.held:
        seen.append([v for _, v in handler.held[0].items])
        handler.release()
        runtime.turn()
        assert len(handler.held) <= 1
        if len(seen) == 1:  # dead-lettered with the first batch, before any offset past it
            assert len(producer.on(DEAD)) == 1 and consumer.stored == [0, 1]
    assert seen == [["w8", "w8"], ["w8", "a"], ["w30"], ["b"]]
    # The bad message was dead-lettered with the first batch; each batch stored its own
    # offsets, in order, and the last every offset of the poll again.
    (dead,) = _dead_letters(producer)
    assert dead.error_kind == "unprocessable"
    assert consumer.stored == [0, 1, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6]
    assert handler.applied == ["w8", "w8", "w8", "a", "w30", "b"]


def test_the_runtime_takes_no_more_while_a_poll_s_batches_wait() -> None:
    runtime, consumer, _, handler = _weighed(max_in_flight=2)
    runtime.process(_msgs("w16", "w16", "w16"))
    # Two handed over, the third waiting in the ledger: the loop polls no more (the ledger is
    # at max_in_flight) until one finishes and the waiting one has been handed over.
    assert len(handler.held) == 2 and len(runtime._ledger) == 3
    handler.release()
    runtime.turn()
    assert len(handler.held) == 2 and len(runtime._ledger) == 2
    assert consumer.stored == [0]


def test_a_poll_s_waiting_batches_still_let_the_consumer_poll() -> None:
    """However many batches a poll became, the wait for room ends in a pause after
    pause_after_s, and the polls that follow keep the consumer in its group."""
    runtime, consumer, _, handler = _weighed(max_in_flight=1)
    runtime._pause_after_s = 0.3
    runtime.process(_msgs("w16", "w16", "w16", "w16"))
    timer = threading.Timer(0.2, handler.release)  # one finishes; the rest are slow
    timer.start()
    started = time.monotonic()
    runtime._backpressure()
    timer.join()
    assert consumer.paused and 0.3 <= time.monotonic() - started < 2
    while runtime._ledger:
        if handler.held:
            handler.release()
        runtime._backpressure()
    assert not consumer.paused and handler.applied == ["w16"] * 4


def test_light_items_stay_one_batch() -> None:
    runtime, _, _, handler = _weighed(max_in_flight=1)
    runtime.process(_msgs(*"abcdefghij"))
    assert [len(b.items) for b in handler.held] == [10]


# -- the query worker --------------------------------------------------------------------------


class EchoService:
    def search_many(
        self, requests: Sequence[SearchRequest], ages_ms: Sequence[float] | None = None
    ) -> list[SearchReply]:
        return [SearchReply(request_id=r.request_id) for r in requests]


EXISTING = {"replies", "replies.mine", "shopvec.products", DEAD}


def _query(
    max_request_age_s: float = 30.0,
    metrics: QueryMetrics | None = None,
    exists: Callable[[str], bool] = EXISTING.__contains__,
) -> tuple[StreamRuntime[Any], FakeConsumer, FakeProducer]:
    producer = FakeProducer()
    worker = QueryWorker(
        producer=cast(Producer, producer),
        default_reply_topic="replies",
        reply_topics=TopicGuard(["replies", "replies.*"], exists),
        service=cast(SearchService, EchoService()),
        metrics=metrics or QueryMetrics(),
        max_request_age_s=max_request_age_s,
    )
    runtime, consumer, _, _ = _runtime(worker, producer)
    return runtime, consumer, producer


def _request(offset: int, reply_topic: str = "replies.mine", **extra: Any) -> Message:
    body = {"request_id": f"r{offset}", "text": "red dress", "reply_topic": reply_topic, **extra}
    return cast(Message, FakeMessage(offset, json.dumps(body).encode()))


def test_offsets_wait_for_the_replies_and_keep_their_order() -> None:
    runtime, consumer, producer = _query()
    runtime.process([_request(0), _request(1)])
    runtime.process([_request(2)])
    # Nothing acknowledged yet: the second batch was taken all the same, nothing stored.
    assert len(producer.unacknowledged) == 3 and consumer.stored == []

    producer.acknowledge(1, first=2)  # the second batch's reply
    runtime.turn()
    assert consumer.stored == []  # the first batch still waits, so the second does too

    producer.acknowledge(1)  # one of the first batch's two
    runtime.turn()
    assert consumer.stored == []

    producer.acknowledge(1)
    runtime.turn()
    assert consumer.stored == [0, 1, 2]
    assert producer.flushes == 0


def test_a_reply_never_acknowledged_holds_the_worker_up_only_until_its_request_is_too_old() -> None:
    """A reply topic deleted after its request named it is acknowledged only when the
    producer's own timeout (minutes) runs out; meanwhile every later batch's offsets wait
    behind it, and at max_in_flight the worker takes nothing more. Past the request age limit
    the reply is no use to anyone (a replay would drop the request as expired): the batch goes
    on without it."""
    metrics = QueryMetrics()
    runtime, consumer, producer = _query(max_request_age_s=0.2, metrics=metrics)
    runtime.process([_request(0)])
    runtime.process([_request(1)])
    producer.acknowledge(1, first=1)  # the second batch's reply; the first's never comes
    runtime.turn()
    assert consumer.stored == []
    time.sleep(0.25)
    runtime.turn()
    runtime.turn()
    assert consumer.stored == [0, 1]
    assert metrics.registry.get_sample_value("shopvec_query_replies_unacknowledged_total") == 1
    producer.acknowledge(1)  # late: changes nothing
    runtime.turn()
    assert consumer.stored == [0, 1]


def test_a_batch_goes_on_once_its_waiting_replies_topics_are_found_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that closes with searches in flight deletes its reply topic: their replies
    would be acknowledged only when the producer gives up, and the worker would wait the
    request age limit at 64 batches. Once they have waited GONE_CHECK_S, the worker asks the
    broker; a batch whose waiting replies all go to deleted topics goes on at once."""
    monkeypatch.setattr(worker_module, "GONE_CHECK_S", 0.05)
    topics = set(EXISTING)
    metrics = QueryMetrics()
    runtime, consumer, producer = _query(metrics=metrics, exists=topics.__contains__)
    runtime.process([_request(0), _request(1, reply_topic="replies")])
    runtime.process([_request(2, reply_topic="replies")])
    producer.acknowledge(1, first=1)  # the first batch's reply to "replies"
    time.sleep(0.06)
    runtime.turn()
    runtime.turn()
    assert consumer.stored == []  # replies.mine still exists: late, not lost

    topics.discard("replies.mine")
    time.sleep(0.06)
    runtime.turn()
    assert consumer.stored == [0, 1]  # the second batch's reply to "replies" still waits
    producer.acknowledge(1, first=1)
    runtime.turn()
    assert consumer.stored == [0, 1, 2]
    assert metrics.registry.get_sample_value("shopvec_query_replies_unacknowledged_total") == 1

    # The guard forgot the topic: a search naming it now is refused, not answered into it.
    runtime.process([_request(3)])
    producer.flush()
    runtime.turn()
    assert [d.error_kind for d in _dead_letters(producer)] == ["forbidden_reply_topic"]


def test_a_batch_with_a_reply_to_a_live_topic_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a batch whose waiting replies all go to deleted topics goes on; one whose replies
    have not yet waited GONE_CHECK_S is not asked about."""
    monkeypatch.setattr(worker_module, "GONE_CHECK_S", 0.2)
    topics = set(EXISTING)
    asked: list[str] = []

    def exists(topic: str) -> bool:
        asked.append(topic)
        return topic in topics

    runtime, consumer, producer = _query(exists=exists)
    runtime.process([_request(0), _request(1, reply_topic="replies")])
    topics.discard("replies.mine")
    looked_up = len(asked)  # the guard's, as the replies were produced
    runtime.turn()
    assert len(asked) == looked_up  # too young to ask about
    time.sleep(0.25)
    runtime.turn()
    assert consumer.stored == []  # "replies" still exists: the batch waits for it
    assert len(asked) > looked_up
    producer.acknowledge(1, first=1)  # the reply to "replies"
    time.sleep(0.25)
    runtime.turn()
    assert consumer.stored == [0, 1]


def test_a_check_cut_short_goes_on_from_what_it_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check asks for GONE_BUDGET_S at most; the topics it found deleted are kept, so a
    batch with more of them than one check can ask about is let go all the same."""
    monkeypatch.setattr(worker_module, "GONE_CHECK_S", 0.02)
    monkeypatch.setattr(worker_module, "GONE_BUDGET_S", 0.01)
    topics = set(EXISTING) | {"replies.a", "replies.b", "replies.c"}
    asked: list[str] = []

    def slow(topic: str) -> bool:
        asked.append(topic)
        time.sleep(0.015)  # past the budget: one lookup a check
        return topic in topics

    runtime, consumer, _ = _query(exists=slow)
    runtime.process([_request(i, reply_topic=f"replies.{c}") for i, c in enumerate("abc")])
    topics -= {"replies.a", "replies.b", "replies.c"}
    looked_up = len(asked)
    for _ in range(3):
        time.sleep(0.03)
        runtime.turn()
    assert consumer.stored == [0, 1, 2]
    assert sorted(asked[looked_up:]) == ["replies.a", "replies.b", "replies.c"]


def test_a_broker_that_cannot_be_asked_gives_up_on_no_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "GONE_CHECK_S", 0.05)
    asked: list[str] = []

    def away(topic: str) -> bool:
        asked.append(topic)
        if len(asked) > 1:  # the first lookup is the guard's, before the reply is produced
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return True

    runtime, consumer, producer = _query(exists=away)
    runtime.process([_request(0)])
    for _ in range(3):
        time.sleep(0.06)
        runtime.turn()
    assert consumer.stored == [] and len(asked) == 2  # asked once, then not for GONE_RETRY_S
    producer.acknowledge(1)
    runtime.turn()
    assert consumer.stored == [0]


def test_a_reply_topic_that_cannot_be_looked_up_is_answered_all_the_same() -> None:
    # The broker slow or away is no fault of the request's: not dead-lettered. Producers create
    # no topic, so a reply to one that is missing fails rather than making it.
    asked: list[str] = []

    def away(topic: str) -> bool:
        asked.append(topic)
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    runtime, consumer, producer = _query(exists=away)
    runtime.process([_request(0), _request(1)])
    producer.flush()
    runtime.turn()
    assert _dead_letters(producer) == []
    replied = [SearchReply.from_bytes(v).request_id for v in producer.on("replies.mine")]
    assert replied == ["r0", "r1"] and consumer.stored == [0, 1]
    assert len(asked) == 1  # not once a reply while the broker does not answer


def test_a_failed_reply_does_not_hold_the_offsets_back() -> None:
    runtime, consumer, producer = _query()
    runtime.process([_request(0)])
    producer.acknowledge(1, err=KafkaError(KafkaError._MSG_TIMED_OUT))
    runtime.turn()
    assert consumer.stored == [0]


def test_a_dead_letter_is_acknowledged_before_its_batch_moves_on() -> None:
    runtime, consumer, producer = _query()
    runtime.process([cast(Message, FakeMessage(0, b"{not json")), _request(1)])
    producer.acknowledge(len(producer.unacknowledged))
    runtime.turn()
    assert [d.error_kind for d in _dead_letters(producer)] == ["not_json"]
    assert consumer.stored == [0, 1]


@pytest.mark.parametrize("topic", ["shopvec.products", DEAD, "replies.nobody-made-this", "x" * 300])
def test_a_reply_topic_outside_the_patterns_or_missing_gets_no_write(topic: str) -> None:
    runtime, consumer, producer = _query()
    runtime.process([_request(0, reply_topic=topic)])
    producer.flush()
    runtime.turn()
    assert {t for t, _ in producer.delivered} == {DEAD}
    (dead,) = _dead_letters(producer)
    assert dead.error_kind == "forbidden_reply_topic"
    assert consumer.stored == [0]


def test_the_reply_topic_header_is_held_to_the_same_patterns() -> None:
    runtime, _, producer = _query()
    body = {"request_id": "r0", "text": "red dress"}
    msg = FakeMessage(0, json.dumps(body).encode(), headers=[(HEADER_REPLY_TOPIC, DEAD.encode())])
    runtime.process([cast(Message, msg)])
    producer.flush()
    assert [d.error_kind for d in _dead_letters(producer)] == ["forbidden_reply_topic"]


def test_an_invalid_request_naming_a_forbidden_topic_gets_no_error_reply_there() -> None:
    runtime, _, producer = _query()
    body = {"request_id": "r0", "reply_topic": "shopvec.products"}  # no query: invalid
    runtime.process([cast(Message, FakeMessage(0, json.dumps(body).encode()))])
    producer.flush()
    assert {t for t, _ in producer.delivered} == {DEAD}


def test_a_request_without_request_id_is_answered_under_its_correlation_id() -> None:
    runtime, _, producer = _query()
    body = {"text": "red dress", "reply_topic": "replies.mine"}
    msg = FakeMessage(0, json.dumps(body).encode(), headers=[(HEADER_CORRELATION_ID, b"c-42")])
    runtime.process([cast(Message, msg)])
    producer.flush()
    (reply,) = [SearchReply.from_bytes(v) for v in producer.on("replies.mine")]
    assert reply.request_id == "c-42" and reply.error is None


def test_requests_no_reply_can_answer_are_dead_lettered_and_never_stop_the_worker() -> None:
    """Bodies the contract refuses and whose error reply cannot be built either: nested deeper
    than Python's json reads, or naming a request id no reply can carry. Failing alone five
    times in a row, they stopped the worker as a fault of the system."""
    runtime, consumer, producer = _query()
    runtime.health.assigned.set()
    nested = b"[" * 5000 + b"]" * 5000
    surrogate = b'{"request_id": "\\ud800", "reply_topic": "replies.mine"}'
    headers = [(HEADER_CORRELATION_ID, b"c-1"), (HEADER_REPLY_TOPIC, b"replies.mine")]
    bodies = [nested, surrogate] * 4
    runtime.process(
        [cast(Message, FakeMessage(i, body, headers=headers)) for i, body in enumerate(bodies)]
    )
    runtime.process([_request(len(bodies))])
    producer.acknowledge(len(producer.unacknowledged))
    runtime.turn()
    assert runtime.health.ready() and runtime.health.reason is None
    assert consumer.stored[-1] == len(bodies)
    assert [SearchReply.from_bytes(v).request_id for v in producer.on("replies.mine")] == [
        *["c-1"] * 4,  # the nested ones: answered under their correlation id
        f"r{len(bodies)}",
    ]
    assert [d.error_kind for d in _dead_letters(producer)] == ["not_json"] * 4
