"""Taste vectors, recent event ids, item windows and the shared count rows: the pure parts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shopvec.behaviour import Contribution, ItemWindow, Pseudonymiser, StatsUpdate, TasteState
from shopvec.behaviour.dedupe import RecentEvents
from shopvec.behaviour.stats import StatsRow

HOUR = 3_600_000


def test_decay_halves_the_weight_in_one_half_life() -> None:
    state = TasteState.empty(2)
    state.add(np.array([1.0, 0.0]), 2.0, 0, HOUR)
    assert state.weight_at(HOUR, HOUR) == pytest.approx(1.0)
    state.add(np.array([0.0, 1.0]), 1.0, HOUR, HOUR)
    # the older click now weighs 1, the new one 1: the taste points half-way
    assert state.weight == pytest.approx(2.0)
    np.testing.assert_allclose(state.unit(), np.array([1, 1]) / np.sqrt(2), rtol=1e-6)


def test_the_result_does_not_depend_on_arrival_order() -> None:
    rng = np.random.default_rng(1)
    events = [
        (rng.normal(size=4), float(w), int(t))
        for w, t in zip([1, 3, 0.5, 5], [0, 7, 2, 5], strict=True)
    ]
    results = []
    for order in itertools.permutations(events):
        s = TasteState.empty(4)
        for vec, w, t in order:
            s.add(vec, w, t * HOUR, 2 * HOUR, categories=["c"], brand="b")
        results.append((s.vector, s.weight, s.categories["c"], s.brands["b"]))
    for vector, weight, cat, brand in results[1:]:
        np.testing.assert_allclose(vector, results[0][0], rtol=1e-9)
        assert weight == pytest.approx(results[0][1])
        assert cat == pytest.approx(results[0][2]) and brand == pytest.approx(results[0][3])


def test_a_negative_weight_moves_the_taste_away() -> None:
    s = TasteState.empty(2)
    s.add(np.array([1.0, 0.2]), 1.0, 0, HOUR)
    s.add(np.array([1.0, -0.8]), -0.5, 0, HOUR)
    assert s.unit() is not None and s.unit()[1] > 0.2 / np.hypot(1, 0.2)


def test_recent_events_are_bounded_and_refuse_what_may_have_been_forgotten() -> None:
    recent = RecentEvents(capacity=3)
    for i in range(5):
        assert not recent.seen(f"e{i}", i)
        recent.add(f"e{i}", i)
    assert len(recent.ids) == 3 and recent.horizon_ms == 1
    assert recent.seen("e4", 4)  # remembered
    assert recent.seen("e0", 0)  # evicted, behind the horizon: still refused
    assert not recent.seen("new", 2)
    again = RecentEvents.from_json(recent.to_json(), 3)
    assert again == recent


def test_window_changes_are_exactly_taken_back() -> None:
    window = ItemWindow(capacity=3)
    added = Contribution()
    for i, item in enumerate(["a", "b", "c", "a", "d"]):
        window.touch(item, i * HOUR, ["cat"], added)
    assert [item for item, _ in window.recency()] == ["d", "a", "c"]
    taken = Contribution()
    window.release(taken)
    total = Contribution()
    total.merge(added)
    total.merge(taken)
    assert all(v == 0 for v in total.pairs.values())
    assert all(v == 0 for v in total.users.values())
    rows: dict[str, StatsRow] = {}
    update = StatsUpdate(HOUR)
    update.add(0, 1, added)
    update.add(0, 2, taken)
    update.apply(rows, {"i": 10, "c": 10})
    assert all(r.empty for r in rows.values())


def test_rows_skip_changes_they_already_hold() -> None:
    window = ItemWindow(capacity=5)
    change = Contribution()
    window.touch("a", 0, ["x"], change)
    window.touch("b", 0, ["x"], change)
    rows: dict[str, StatsRow] = {}
    for _ in range(2):  # the same offset twice: a replay
        update = StatsUpdate(HOUR)
        update.add(0, 41, change)
        update.apply(rows, {"i": 10, "c": 10})
    assert rows["i:0:a"].counts == {"b": 1} and rows["i:0:a"].total == 1
    assert rows["c:0:x"].counts == {"a": 1, "b": 1}
    for _ in range(2):  # an op id twice: an expiry retried
        update = StatsUpdate(HOUR)
        update.add(0, "op-1", change)
        update.apply(rows, {"i": 10, "c": 10})
    assert rows["i:0:a"].counts == {"b": 2}


def test_rows_are_bounded() -> None:
    row = StatsRow("i", 0, "a")
    for i in range(100):
        row.add_count(f"n{i}", float(i))
        row.prune(10)
    assert len(row.counts) <= 20
    row.prune(10)
    assert "n99" in row.counts
    row.add_count("n0", -1.0)  # pruned long ago: nothing to take back, nothing goes negative
    assert all(v > 0 for v in row.counts.values())


def test_pseudonyms_are_keyed_and_rotatable() -> None:
    old = Pseudonymiser("old-key")
    new = Pseudonymiser("new-key", ["old-key"])
    assert old.pseudonym("alice") != Pseudonymiser("other").pseudonym("alice")
    assert len(new.pseudonym("alice")) == 64 and "alice" not in new.pseudonym("alice")
    assert new.candidates("alice") == [new.pseudonym("alice"), old.pseudonym("alice")]
    assert "old-key" not in repr(new)
    with pytest.raises(ValueError):
        Pseudonymiser("")
