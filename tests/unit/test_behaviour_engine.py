"""The engine on in-memory stores: idempotence across crashes, forgetting, expiry, rotation."""

from __future__ import annotations

import copy
import json

import pytest

from shopvec.behaviour import BehaviourEngine, Pseudonymiser
from tests.unit.behaviour_fakes import World, click, forget


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
