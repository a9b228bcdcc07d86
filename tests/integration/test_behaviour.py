"""User behaviour through the real broker and Milvus Lite: the behaviour worker, personalised
search through the query worker, replays and restarts, and forgetting a user."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from schemas import ForgetUser, ProductUpsert, UserEvent
from shopvec.behaviour import decay
from shopvec.client import SearchClient
from shopvec.encoders.hashing import HashingEncoder
from shopvec.imaging import ImageLoader
from shopvec.indexing import ProductIndexer
from shopvec.kafka.config import producer_config
from shopvec.runtime import (
    build_behaviour_service,
    build_fusion,
    build_personaliser,
    build_query_worker,
    build_store,
    collection_spec,
)
from shopvec.settings import Settings
from tests.integration.conftest import running

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHOES = [f"Running shoe model {i}" for i in range(5)]
HATS = [f"Woollen winter hat style {i}" for i in range(5)]


@pytest.fixture
def world(settings: Settings) -> Iterator[Settings]:
    """A catalogue of five shoes and five hats, indexed with the hashing encoder, and a users
    collection of this test's own."""
    tag = uuid.uuid4().hex[:10]
    s = settings.model_copy(
        update={
            "milvus": settings.milvus.model_copy(update={"users_collection": f"users_{tag}"}),
            "behaviour": settings.behaviour.model_copy(
                # The events are stamped from a fixed T0: kept within retention whatever the
                # day the tests run.
                update={
                    "weight_taste": 1.0,
                    "batch_wait_ms": 50,
                    "pseudonym_key": "test-key",
                    "inactive_ttl_days": 36_500.0,
                }
            ),
        }
    )
    encoder = HashingEncoder()
    fusion = build_fusion(s, encoder)
    store = build_store(s, collection_spec(s, encoder, fusion))
    store.ensure()
    products = [
        ProductUpsert(
            id=f"{kind}-{i}",
            version=1,
            updated_at=T0,
            title=title,
            category_path=[group, kind],
            brand=brand,
        )
        for kind, group, brand, titles in (
            ("shoe", "Footwear", "Fleet", SHOES),
            ("hat", "Accessories", "Warm", HATS),
        )
        for i, title in enumerate(titles)
    ]
    ProductIndexer(encoder, store, ImageLoader(s.images), fusion).apply(products)
    yield s
    store.close()


class Events:
    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(producer_config(settings))
        self._topic = settings.topics.user_events

    def send(self, *events: UserEvent | ForgetUser) -> None:
        for e in events:
            self._producer.produce(self._topic, key=e.user_id.encode(), value=e.to_bytes())
        assert self._producer.flush(10) == 0


def clicks(user: str, products: list[str], start_min: int = 0) -> list[UserEvent]:
    return [
        UserEvent(
            event_id=f"{user}-{p}-{start_min + i}",
            user_id=user,
            product_id=p,
            type="click",
            timestamp=T0 + timedelta(minutes=start_min + i),
        )
        for i, p in enumerate(products)
    ]


def snapshot(settings: Settings) -> tuple[dict, dict]:
    """Users by pseudonym, and the non-empty shared counts with popularity decayed to one time."""
    from shopvec.behaviour import MilvusStatsStore, counts_collection
    from shopvec.runtime import attach_product_store

    client = attach_product_store(settings, wait_s=5).client
    m = settings.milvus
    users = {
        r["pseudonym"]: {k: v for k, v in r.items() if k != "taste_vec"}
        for r in client.query(m.users_collection, filter='pseudonym != ""', output_fields=["*"])
    }
    half_life = settings.behaviour.half_life_hours * 3_600_000
    ref = int((T0 + timedelta(days=30)).timestamp() * 1000)
    counts = {}
    stats = MilvusStatsStore(client, counts_collection(m.users_collection), timeout_s=10)
    for r in stats.all():
        factor = decay(ref - r.at_ms, half_life) if r.kind == "c" else 1.0
        values = {k: round(v * factor, 6) for k, v in r.counts.items()}
        if values or r.total:
            counts[r.key] = (values, round(r.total, 6))
    return users, counts


def test_a_users_clicks_reorder_their_results_and_no_one_elses(world: Settings, wait_for) -> None:
    service, metrics = build_behaviour_service(world)
    query, _ = build_query_worker(world, HashingEncoder())
    events = Events(world)
    with (
        running(service.run, service.ready),
        running(query.run, query.ready),
        SearchClient(world, timeout_s=20) as client,
    ):

        def order(user: str | None) -> list[str]:
            reply = client.search("running shoe", top_k=6, user_id=user)
            assert reply.error is None, reply.error
            return [r.product_id for r in reply.results]

        before = {u: order(u) for u in (None, "alice", "bob")}
        assert before["alice"] == before[None] == before["bob"]
        events.send(*clicks("alice", ["hat-0", "hat-1", "hat-2"]))
        wait_for(lambda: metrics.applied._value.get() >= 3, 30, "alice's clicks")

        after_alice = order("alice")
        assert after_alice != before[None]
        assert after_alice.index("hat-3") < before[None].index("hat-3")
        assert order(None) == before[None]
        assert order("bob") == before["bob"]
        reply = client.search("running shoe", top_k=3, user_id="alice")
        expl = reply.results[0].explanation or {}
        assert expl["personalised"] and expl["weights"]["taste"] == 1.0
        assert {"query", "taste", "cf"} <= set(expl)

        recs = client.search(user_id="alice", top_k=2)
        assert recs.scenario == "recommend"
        assert {r.product_id for r in recs.results} == {"hat-3", "hat-4"}


def test_replays_and_restarts_change_nothing(world: Settings, wait_for) -> None:
    events = Events(world)
    sent = clicks("carol", ["shoe-0", "shoe-1", "hat-0"]) + clicks("dave", ["shoe-0", "hat-0"])
    service, metrics = build_behaviour_service(world)
    with running(service.run, service.ready):
        events.send(*sent)
        wait_for(lambda: metrics.applied._value.get() >= len(sent), 30, "the first delivery")
        first = snapshot(world)
        events.send(*sent[:3])  # delivered twice
        wait_for(lambda: metrics.duplicates._value.get() >= 3, 30, "the replay to arrive")
        assert snapshot(world) == first
    # A fresh group has no committed offsets: the whole topic is replayed into the same Milvus.
    again, metrics = build_behaviour_service(world, group_id=f"behaviour-{uuid.uuid4().hex}")
    with running(again.run, again.ready):
        wait_for(lambda: metrics.duplicates._value.get() >= len(sent) + 3, 30, "the replay")
    assert metrics.applied._value.get() == 0
    assert snapshot(world) == first
    users, counts = first
    assert len(users) == 2
    assert any(k.startswith("i:") and k.endswith(":shoe-0") for k in counts)


def test_forget_user_leaves_no_trace(world: Settings, wait_for) -> None:
    events = Events(world)
    service, metrics = build_behaviour_service(world)
    personaliser = build_personaliser(world, build_store(world, _spec(world)))
    with running(service.run, service.ready):
        events.send(*clicks("erin", ["shoe-2", "shoe-3"]))
        wait_for(lambda: metrics.applied._value.get() >= 2, 30, "erin's clicks")
        without = snapshot(world)
        events.send(*clicks("frank", ["shoe-2", "hat-3", "hat-4"], start_min=10))
        wait_for(lambda: metrics.applied._value.get() >= 5, 30, "frank's clicks")
        assert personaliser.profile("frank") is not None
        assert snapshot(world) != without
        asked = time.monotonic()
        events.send(ForgetUser(event_id="f1", user_id="frank", timestamp=T0 + timedelta(hours=1)))
        wait_for(lambda: personaliser.profile("frank") is None, 10, "frank to be forgotten")
        assert time.monotonic() - asked < 10
        wait_for(lambda: metrics.forgotten._value.get() >= 1, 10, "the forget to be counted")
    assert snapshot(world) == without


def _spec(settings: Settings):  # the catalogue's spec, as the world fixture made it
    encoder = HashingEncoder()
    return collection_spec(settings, encoder, build_fusion(settings, encoder))


def test_count_rows_keep_their_op_ids_and_other_partitions_offsets(world: Settings) -> None:
    """Written and read back through Milvus; a row written before other partitions' offsets
    (its op ids a bare list) reads as it was."""
    from shopvec.behaviour import MilvusStatsStore, counts_collection
    from shopvec.behaviour.stats import StatsRow
    from shopvec.runtime import attach_product_store

    client = attach_product_store(world, wait_s=5).client
    stats = MilvusStatsStore(client, counts_collection(world.milvus.users_collection), timeout_s=10)
    stats.ensure()
    moved = StatsRow("i", 0, "shoe-1", {"hat-0": 1.0}, 1.0, 0, 41, ["x1", "x2"], {3: 17, 12: 5})
    before = StatsRow("c", 0, "*", {"shoe-1": 0.5}, 0.0, 9, 40, ["x3"])
    stats.upsert([moved, before])
    assert stats.get([moved.key, before.key]) == {moved.key: moved, before.key: before}
