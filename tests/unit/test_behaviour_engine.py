"""The engine on in-memory stores: idempotence across crashes, forgetting, expiry, rotation."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import cast

import numpy as np
import pytest
from confluent_kafka import Consumer, Message
from pydantic import ValidationError

from shopvec.behaviour import BehaviourEngine, Pseudonymiser
from shopvec.behaviour.engine import Inbound
from shopvec.behaviour.metrics import BehaviourMetrics
from shopvec.behaviour.service import BehaviourService
from shopvec.behaviour.stats import MAX_OPS, StatsRow, StatsUpdate
from shopvec.behaviour.window import Contribution
from shopvec.kafka.batch import Reject
from shopvec.kafka.health import Health
from shopvec.kafka.loop import Retrier
from tests.unit.behaviour_fakes import T0, World, click, forget, product_row
from tests.unit.kafka_fakes import FakeMessage


def test_clicks_build_a_taste_and_shared_counts() -> None:
    w = World()
    out = w.engine.apply(w.inbound(click("u1", "shoe-0"), click("u1", "shoe-1", 1)))
    assert out.applied == 2 and out.users_written == 1
    (row,) = w.users.rows.values()
    assert row["pseudonym"] == w.pseudonyms.pseudonym("u1")
    assert "u1" not in json.dumps(row)
    assert row["prefs"]["category"]["Shoes"] > 0
    assert row["prefs"]["brand"]["A"] == pytest.approx(2.0, rel=1e-3)
    counts = w.counts()
    assert counts["i:0:shoe-0"] == ({"shoe-1": 1.0}, 1.0)
    assert set(counts["c:0:*"][0]) == {"shoe-0", "shoe-1"}


def test_a_replayed_event_changes_nothing() -> None:
    w = World()
    first = w.inbound(click("u1", "shoe-0"), click("u1", "hat-0", 1))
    w.engine.apply(first)
    users, counts = copy.deepcopy(w.users.rows), w.counts()
    again = w.engine.apply(first)  # the same messages, offsets and all
    assert again.duplicates == 2 and again.applied == 0
    # the same events again at new offsets (a producer retry): found by event id
    w.engine.apply(w.inbound(*(m.event for m in first)))
    assert w.users.rows == users and w.counts() == counts


class _Crash(Exception):
    pass


def test_a_kill_between_the_two_writes_counts_each_event_once() -> None:
    events = [click("u1", "shoe-0"), click("u2", "shoe-0"), click("u1", "shoe-1", 2)]
    clean = World()
    clean.engine.apply(clean.inbound(*events))

    w = World()
    batch = w.inbound(*events)
    real_upsert = w.users.upsert

    def dies(rows: object) -> None:
        raise _Crash

    w.users.upsert = dies  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        w.engine.apply(batch)  # the counts were written, the users were not
    assert w.counts() and not w.users.rows
    w.users.upsert = real_upsert  # type: ignore[method-assign]
    w.engine.apply(batch[:2])  # the replay may be cut differently
    w.engine.apply(batch)
    assert w.counts() == clean.counts()
    assert w.users.rows == clean.users.rows


def test_forget_leaves_no_trace() -> None:
    w = World()
    w.engine.apply(w.inbound(click("bob", "shoe-0"), click("bob", "shoe-1", 1)))
    before = w.counts()
    w.engine.apply(
        w.inbound(*(click("alice", p, i) for i, p in enumerate(["shoe-0", "hat-1", "hat-2"])))
    )
    assert w.counts() != before
    out = w.engine.apply(w.inbound(forget("alice", 10)))
    assert out.forgotten == 1
    assert w.counts() == before
    assert w.pseudonyms.pseudonym("alice") not in w.users.rows
    assert w.personaliser.profile("alice") is None
    # and forgetting is itself idempotent
    w.engine.apply(w.inbound(forget("alice", 11)))
    assert w.counts() == before


def test_forget_then_new_events_in_one_batch_start_afresh() -> None:
    w = World()
    w.engine.apply(w.inbound(click("u", "hat-0"), forget("u", 1), click("u", "shoe-0", 2)))
    profile = w.personaliser.profile("u")
    assert profile is not None and [i for i, _ in profile.window.recency()] == ["shoe-0"]
    assert "i:0:hat-0" not in w.counts()


def test_inactive_users_are_dropped_with_their_share() -> None:
    w = World(inactive_ttl_days=1)
    w.engine.apply(w.inbound(click("bob", "shoe-0", 0), click("bob", "shoe-1", 1)))
    w.engine.apply(w.inbound(click("amy", "hat-0", 60 * 24 * 3)))
    t0_ms = int(click("x", "shoe-0", 0).timestamp.timestamp() * 1000)
    now = t0_ms + 3 * 86_400_000 + 60_000
    assert w.engine.expire(now, shards={1}) == 0  # not this worker's shard
    assert w.engine.expire(now, shards={0}) == 1
    assert w.personaliser.profile("bob") is None and w.personaliser.profile("amy") is not None
    assert "i:0:shoe-0" not in w.counts()


def test_users_move_to_the_current_key_and_old_keys_still_forget() -> None:
    old = World()
    old.engine.apply(old.inbound(click("alice", "shoe-0"), click("alice", "shoe-1", 1)))
    rotated = Pseudonymiser("k-new", ["k-now"])
    engine = BehaviourEngine(old.users, old.stats, old.products, rotated, old.config)
    engine.apply(old.inbound(click("alice", "shoe-2", 2)))
    assert list(old.users.rows) == [rotated.pseudonym("alice")]
    row = old.users.rows[rotated.pseudonym("alice")]
    assert len(row["window"]) == 3
    engine.apply(old.inbound(click("bob", "hat-0", 3)))
    # a user still under the old key is forgotten too
    old.engine.apply(old.inbound(click("carol", "hat-1", 4)))
    engine.apply(old.inbound(forget("carol", 5)))
    assert set(old.users.rows) == {rotated.pseudonym("alice"), rotated.pseudonym("bob")}


def test_a_kill_between_a_moved_row_s_write_and_the_old_one_s_delete_is_mended_by_the_replay() -> (
    None
):
    """The batch that moved the row is replayed (its offsets were not stored), and the replay
    finds both copies and deletes the old one: expiry then takes the share back once."""
    w = World(inactive_ttl_days=1)
    w.engine.apply(w.inbound(click("alice", "shoe-0", 0), click("alice", "shoe-1", 1)))
    rotated = Pseudonymiser("k-new", ["k-now"])
    engine = BehaviourEngine(w.users, w.stats, w.products, rotated, w.config)
    batch = w.inbound(click("alice", "shoe-2", 2))
    real_delete = w.users.delete

    def dies(pseudonyms: object) -> None:
        raise _Crash

    w.users.delete = dies  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        engine.apply(batch)
    assert len(w.users.rows) == 2  # both copies, until the replay
    w.users.delete = real_delete  # type: ignore[method-assign]
    engine.apply(batch)
    assert list(w.users.rows) == [rotated.pseudonym("alice")]
    # Bob, who clicked the same shoes later, keeps his share (two copies expired would take
    # it from him).
    later = 60 * 24 * 3
    bob = [click("bob", f"shoe-{i}", later + i) for i in range(3)]
    engine.apply(w.inbound(*bob))
    t0_ms = int(click("x", "shoe-0", 0).timestamp.timestamp() * 1000)
    assert engine.expire(t0_ms + 3 * 86_400_000, shards={0}) == 1
    clean = World(inactive_ttl_days=1)
    clean.engine.apply(clean.inbound(*bob))
    assert w.counts() == clean.counts()


def test_memory_per_user_and_per_item_is_bounded() -> None:
    w = World(cf_window=3, recent_event_ids=8, cf_neighbours=2, popular_per_category=2)
    items = [f"{kind}-{i}" for kind in ("shoe", "hat") for i in range(5)]
    for n in range(60):
        w.engine.apply(w.inbound(click(f"u{n % 4}", items[n % len(items)], n)))
    for row in w.users.rows.values():
        assert len(row["window"]) <= 3 and len(row["recent"]["ids"]) <= 8
    for r in w.stats.all():
        assert len(r.counts) <= 4


def test_unknown_products_and_zero_weights_leave_the_taste_alone() -> None:
    w = World(event_weights={"click": 1.0, "view": 0.0})
    out = w.engine.apply(w.inbound(click("u", "nope"), click("u", "shoe-0", 1, kind="view")))
    assert out.unknown_products == 1
    profile = w.personaliser.profile("u")
    assert profile is not None and profile.taste.unit() is None and not profile.window.items


def test_a_user_s_events_from_another_partition_count_once_and_block_nothing() -> None:
    """A user's counts live in the rows of the shard first seen; an event of theirs from
    another partition (the topic given more partitions, or " alice" keyed apart from
    "alice") is checked by its own partition and offset, not by the shard's offsets."""
    w = World()
    w.engine.apply(
        [Inbound(click("alice", "shoe-0"), 0, 999), Inbound(click("bob", "shoe-1", 1), 0, 1000)]
    )
    from_three = [Inbound(click("alice", "hat-0", 2), 3, 5)]  # below the shard's offsets
    w.engine.apply(from_three)
    assert w.stats.rows["i:0:hat-0"].total == 1.0
    assert w.stats.rows["i:0:shoe-0"].counts == {"hat-0": 1.0}
    w.engine.apply(from_three)  # replayed: once only
    assert w.stats.rows["i:0:hat-0"].total == 1.0
    w.engine.apply([Inbound(forget("alice", 4), 3, 6)])
    assert w.stats.rows["i:0:hat-0"].total == 0.0 and w.stats.rows["i:0:shoe-0"].total == 0.0
    # A high offset from another partition leaves the shard's own offsets counted.
    w.engine.apply([Inbound(click("bob", "hat-1", 5), 3, 10**9)])
    w.engine.apply([Inbound(click("carol", "shoe-2", 6), 0, 1001)])
    assert "shoe-2" in w.stats.rows["c:0:*"].counts


def test_a_row_checks_every_op_id_of_a_batch_against_those_it_held() -> None:
    """A row keeps its last MAX_OPS op ids; a batch of more ops than that marking new ones
    before it checks old ones must still find the old ones."""
    update = StatsUpdate(half_life_ms=1e9)
    row = StatsRow("i", 0, "shoe-0", total=100.0, ops=[f"old{i}" for i in range(MAX_OPS)])
    for i in range(MAX_OPS):
        gone = Contribution()
        gone.user("shoe-0", -1)
        update.add(0, f"new{i}", gone)
    again = Contribution()
    again.user("shoe-0", -1)
    update.add(0, "old0", again)  # applied before, and checked after the new ones
    (written,) = update.apply({row.key: row}, {"i": 10, "c": 10})
    assert written.total == 100.0 - MAX_OPS


def _service(now: datetime) -> BehaviourService:
    return BehaviourService(
        consumer=cast(Consumer, None),
        engine=cast(BehaviourEngine, None),
        metrics=BehaviourMetrics(),
        retry=Retrier(Health(), max_delay_s=0.01),
        max_future_s=300.0,
        max_age_s=365 * 86_400.0,
        clock=now.timestamp,
    )


def _message(body: dict) -> Message:
    return cast(Message, FakeMessage(7, json.dumps(body).encode(), partition=2))


def test_an_interaction_stamped_outside_retention_is_refused_and_a_forget_never_is() -> None:
    """Decay and popularity follow event time: one click stamped 9999-12-31 moved the shard's
    popularity clock there (every later click counted for nothing) and froze its user's taste."""
    service = _service(T0)
    body = {
        "kind": "interaction",
        "event_id": "e1",
        "user_id": "mallory",
        "product_id": "hat-1",
        "type": "click",
    }
    for within in ("2026-01-01T00:04:59Z", "2025-06-01T00:00:00Z"):
        assert service.decode(_message({**body, "timestamp": within})).offset == 7
    for outside, setting in (
        ("9999-12-31T23:59:59Z", "SHOPVEC_BEHAVIOUR__MAX_FUTURE_S"),
        # Older than a user is kept: its replay after expiry would bring the user back.
        ("2024-12-31T23:59:59Z", "SHOPVEC_BEHAVIOUR__INACTIVE_TTL_DAYS"),
    ):
        with pytest.raises(Reject) as info:
            service.decode(_message({**body, "timestamp": outside}))
        assert info.value.kind == "schema_violation"
        assert setting in info.value.reason
    later = {"kind": "forget", "event_id": "f1", "user_id": "mallory"}
    assert service.decode(_message({**later, "timestamp": "9999-12-31T23:59:59Z"})).shard == 2


def test_event_ids_are_bounded_in_bytes() -> None:
    """Kept in the user's row: 256 ids of 128 four-byte characters passed its 64 KiB."""
    with pytest.raises(ValidationError):
        click("u", "shoe-0", eid="😀" * 33)
    assert click("u", "shoe-0", eid="😀" * 32).event_id == "😀" * 32


@pytest.mark.parametrize("retry_order", ["same", "reversed"])
def test_an_expiry_retried_after_its_counts_were_written_takes_each_share_once(
    retry_order: str,
) -> None:
    """20 inactive users (more than a chunk, and more than a row kept op ids of before), the
    users' deletion failing once after the counts were written: the retry, however its users
    come back, takes each share back once."""
    w = World(inactive_ttl_days=1)
    w.engine.apply(w.inbound(*(click(f"old{i}", "shoe-0", i) for i in range(20))))
    w.engine.apply(w.inbound(*(click(f"new{i}", "shoe-0", 60 * 24 * 10 + i) for i in range(3))))
    now = int(click("x", "shoe-0", 60 * 24 * 10 + 10).timestamp.timestamp() * 1000)
    real_delete, real_inactive = w.users.delete, w.users.inactive

    def times_out(pseudonyms: object) -> None:
        raise TimeoutError("the delete timed out")

    w.users.delete = times_out  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        w.engine.expire(now, shards={0})
    w.users.delete = real_delete  # type: ignore[method-assign]
    if retry_order == "reversed":
        w.users.inactive = lambda *a: real_inactive(*a)[::-1]  # type: ignore[method-assign]
    assert w.engine.expire(now, shards={0}) == 20
    assert w.stats.rows["i:0:shoe-0"].total == 3.0
    assert len(w.users.rows) == 3
    # Settled: the rows keep no op id of users who are gone.
    assert not any(r.ops for r in w.stats.rows.values())


def test_a_user_row_of_the_longest_ids_and_names_fits_milvus_json_fields() -> None:
    """Each JSON field of a user's row within the 64 KiB Milvus holds, with every id and name
    at its longest in bytes: a row Milvus refused failed its events after their counts had
    been written, and five such events in a row stopped the worker."""
    w = World()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(80):
        categories = [f"{'类' * 42}{i:02d}"[:42] + f"{j:02d}" for j in range(16)]
        rows.append(
            product_row(
                f"{'商' * 42}{i:02d}", rng.normal(size=8), categories, "牌" * 84 + f"{i:02d}"
            )
        )
    w.products.upsert(rows)
    events = [
        click("u", rows[i % 80]["id"], i, kind="purchase", eid=f"{'事' * 41}{i:05d}")
        for i in range(400)
    ]
    for start in range(0, len(events), 50):
        w.engine.apply(w.inbound(*events[start : start + 50]))
    (row,) = w.users.rows.values()
    for name in ("prefs", "recent", "window"):
        size = len(json.dumps(row[name], ensure_ascii=False, separators=(",", ":")).encode())
        assert size <= 65_536, (name, size)


def test_a_replayed_batch_of_many_events_from_another_partition_counts_once() -> None:
    """More of them than a row keeps op ids: checked by their partition's offset instead."""
    w = World()
    w.engine.apply([Inbound(click("alice", "shoe-0", 0), 0, 1)])  # her counts: shard 0
    batch = [
        Inbound(click("alice", f"{'shoe' if i % 2 else 'hat'}-{i % 5}", 1 + i), 3, 10 + i)
        for i in range(MAX_OPS + 36)
    ]
    real_upsert = w.users.upsert

    def dies(rows: object) -> None:
        raise _Crash

    w.users.upsert = dies  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        w.engine.apply(batch)  # the counts written, the user not
    once = w.counts()
    w.users.upsert = real_upsert  # type: ignore[method-assign]
    w.engine.apply(batch)
    assert w.counts() == once


def test_an_expiry_retry_after_other_partitions_events_takes_each_share_once() -> None:
    """Events from another partition between an expiry that failed and its retry leave the
    expiry's op ids where the retry finds them."""

    def run(fail_once: bool) -> dict:
        w = World(inactive_ttl_days=1)
        w.engine.apply(w.inbound(*(click(f"old{i}", "hat-0", i) for i in range(5))))
        w.engine.apply(
            w.inbound(click("bob", "shoe-0", 60 * 24 * 10), click("keep", "hat-0", 60 * 24 * 10))
        )
        now = int(click("x", "shoe-0", 60 * 24 * 10 + 10).timestamp.timestamp() * 1000)
        if fail_once:
            real_delete = w.users.delete

            def times_out(pseudonyms: object) -> None:
                raise TimeoutError

            w.users.delete = times_out  # type: ignore[method-assign]
            with pytest.raises(TimeoutError):
                w.engine.expire(now, shards={0})
            w.users.delete = real_delete  # type: ignore[method-assign]
        w.engine.apply(
            [Inbound(click("bob", "shoe-0", 60 * 24 * 10 + 1 + i), 1, 100 + i) for i in range(70)]
        )
        w.engine.expire(now, shards={0})
        return w.counts()

    assert run(fail_once=True) == run(fail_once=False)
    assert "i:0:hat-0" in run(fail_once=True)  # keep's share of hat-0 is still there


@pytest.mark.parametrize("cut", ["counts", "delete"])
@pytest.mark.parametrize("then", ["forget", "click"])
def test_an_expiry_cut_short_and_the_user_s_own_event_before_its_retry(cut: str, then: str) -> None:
    """Cut before its counts or before its users' deletion, an expiry leaves users marked; an
    event or a forget of one of them before the retry finishes that expiry with its own op id
    (the counts take the share back once) and starts the user afresh."""

    def run(fails: str | None) -> tuple[dict, object]:
        w = World(inactive_ttl_days=1)
        w.engine.apply(w.inbound(click("alice", "shoe-0", 0), click("alice", "shoe-1", 1)))
        late = 60 * 24 * 5
        w.engine.apply(w.inbound(click("bob", "shoe-0", late), click("bob", "shoe-1", late + 1)))
        now = int(click("x", "shoe-0", late + 2).timestamp.timestamp() * 1000)
        store = w.stats if fails == "counts" else w.users
        name = "upsert" if fails == "counts" else "delete"
        real = getattr(store, name)
        if fails:

            def dies(rows: object) -> None:
                raise _Crash

            setattr(store, name, dies)
            with pytest.raises(_Crash):
                w.engine.expire(now, shards={0})
            setattr(store, name, real)
        else:
            w.engine.expire(now, shards={0})
        event = forget("alice", late + 3) if then == "forget" else click("alice", "hat-0", late + 3)
        w.engine.apply(w.inbound(event))
        w.engine.expire(now, shards={0})  # the retry, if one is still due
        profile = w.personaliser.profile("alice")
        window = None if profile is None else [i for i, _ in profile.window.recency()]
        return w.counts(), window

    assert run(cut) == run(None)
