"""When `reindex` moves the alias: only once caught up and its indexer stopped cleanly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

import shopvec.indexing.reindex as reindexing


class _Store:
    collection = "products__new"

    def __init__(self) -> None:
        self.switched = False

    def ensure(self) -> None:
        return None

    def point_alias_here(self) -> None:
        self.switched = True

    def count(self) -> int:
        return 0

    def alias_target(self) -> str:
        return self.collection if self.switched else "products__old"


DEFAULT_ENDS = {0: (0, 5), 1: (10, 15)}


class _Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


def _reindex(
    monkeypatch: pytest.MonkeyPatch,
    run: Callable[[threading.Event], None],
    seen: float,
    *,
    written: dict[int, int] | None = None,
    ends: dict[int, tuple[int, int]] | None = None,
) -> tuple[dict[str, Any], _Store]:
    """A reindex over a topic of two partitions holding offsets 0 to 4 and 10 to 14 (the
    second's first ten removed), whose indexer has read `seen` events and written each
    partition up to `written` (next offsets) before it runs `run`."""
    store = _Store()
    metrics = SimpleNamespace(events_in=SimpleNamespace(_value=SimpleNamespace(get=lambda: seen)))
    built: dict[str, Any] = {}

    def service_run(stop: threading.Event) -> None:
        positions = built["positions"]
        starts = positions.starts([TopicPartition("shopvec.products", p) for p in (0, 1)])
        assert set(starts.values()) == {OFFSET_BEGINNING}
        for partition, offset in (written or {}).items():
            positions.advance([_Msg(partition, offset - 1)])
        run(stop)

    def build(s: Any, e: Any, group_id: str, positions: Any) -> Any:
        built.update(group=group_id, positions=positions)
        return SimpleNamespace(run=service_run), metrics

    records: list[Any] = []

    class Record:
        def __init__(self, settings: Any, group: str) -> None:
            self.group, self.held, self.advanced = group, [], []
            records.append(self)

        def record(self, offsets: Any) -> None:
            self.recorded = dict(offsets)

        def hold(self, partitions: Any) -> None:
            self.held += partitions

        def advance(self, messages: Any) -> None:
            self.advanced += messages

    monkeypatch.setattr(reindexing, "GroupPositions", Record)
    monkeypatch.setattr(reindexing, "build_fusion", lambda s, e: None)
    monkeypatch.setattr(reindexing, "collection_spec", lambda s, e, f: None)
    monkeypatch.setattr(reindexing, "build_store", lambda s, spec: store)
    monkeypatch.setattr(reindexing, "topic_ends", lambda s, t: ends or DEFAULT_ENDS)
    monkeypatch.setattr(reindexing, "build_indexer_service", build)
    settings: Any = SimpleNamespace(
        topics=SimpleNamespace(products="shopvec.products"),
        indexer=SimpleNamespace(group_id="shopvec-indexer"),
    )
    summary = reindexing.reindex(
        settings,
        progress=False,
        timeout_s=1.0,
        idle_s=0.1,
        encoder=object(),  # type: ignore[arg-type]
    )
    # A group of its own; what it wrote is recorded in the collection's positions group, which
    # the new model's indexers start from.
    assert built["group"].startswith("shopvec-reindex-products__new-")
    (record,) = records
    assert record.group == "shopvec-indexer.products__new" and len(record.held) == 2
    # Before anything else: the collection holds nothing of any partition.
    assert record.recorded == {
        ("shopvec.products", p): low for p, (low, _) in (ends or DEFAULT_ENDS).items()
    }
    assert len(record.advanced) == len(written or {})
    return summary, store


def _dies(stop: threading.Event) -> None:
    raise RuntimeError("the indexer failed")


def _waits(stop: threading.Event) -> None:
    stop.wait()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_indexer_that_died_leaves_the_alias_where_it_was(monkeypatch) -> None:
    summary, store = _reindex(monkeypatch, _dies, seen=0.0)
    assert not store.switched and summary["switched"] is False
    assert summary["unfinished"] == "the indexer stopped before it caught up"


def test_a_reindex_not_caught_up_in_time_leaves_the_alias_where_it_was(monkeypatch) -> None:
    summary, store = _reindex(monkeypatch, _waits, seen=9.0, written={0: 5, 1: 14})
    assert not store.switched
    assert summary["unfinished"] == "not caught up within 1 s (9 of 10 events)"


def test_a_reindex_caught_up_moves_the_alias(monkeypatch) -> None:
    summary, store = _reindex(monkeypatch, _waits, seen=10.0, written={0: 5, 1: 15})
    assert store.switched and summary["switched"] is True and summary["unfinished"] == ""


def test_caught_up_is_judged_by_offsets_written_not_events_read(monkeypatch) -> None:
    """A record refused unread (oversize) is never counted as an event read; its offset is
    passed all the same, and the reindex ends."""
    summary, store = _reindex(monkeypatch, _waits, seen=9.0, written={0: 5, 1: 15})
    assert store.switched and summary["unfinished"] == ""


def test_a_partition_not_written_keeps_the_alias_where_it_was(monkeypatch) -> None:
    summary, store = _reindex(monkeypatch, _waits, seen=5.0, written={0: 5})
    # Partition 1 holds 10 to 14, none written.
    assert not store.switched and summary["unfinished"].startswith("not caught up")


def test_an_empty_partition_is_caught_up_from_the_start(monkeypatch) -> None:
    _, store = _reindex(monkeypatch, _waits, seen=5.0, written={0: 5}, ends={0: (0, 5), 1: (7, 7)})
    assert store.switched
