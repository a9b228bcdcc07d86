"""When `reindex` moves the alias: only once caught up and its indexer stopped cleanly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

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


def _reindex(
    monkeypatch: pytest.MonkeyPatch, run: Callable[[threading.Event], None], seen: float
) -> tuple[dict[str, Any], _Store]:
    store = _Store()
    metrics = SimpleNamespace(events_in=SimpleNamespace(_value=SimpleNamespace(get=lambda: seen)))
    service = SimpleNamespace(run=run)
    monkeypatch.setattr(reindexing, "build_fusion", lambda s, e: None)
    monkeypatch.setattr(reindexing, "collection_spec", lambda s, e, f: None)
    monkeypatch.setattr(reindexing, "build_store", lambda s, spec: store)
    monkeypatch.setattr(reindexing, "topic_size", lambda s, t: 10)
    monkeypatch.setattr(
        reindexing, "build_indexer_service", lambda s, e, group_id: (service, metrics)
    )
    settings: Any = SimpleNamespace(topics=SimpleNamespace(products="shopvec.products"))
    summary = reindexing.reindex(
        settings,
        progress=False,
        timeout_s=1.0,
        idle_s=0.1,
        encoder=object(),  # type: ignore[arg-type]
    )
    return summary, store


def _dies(stop: threading.Event) -> None:
    raise RuntimeError("the indexer failed")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_indexer_that_died_leaves_the_alias_where_it_was(monkeypatch) -> None:
    summary, store = _reindex(monkeypatch, _dies, seen=0.0)
    assert not store.switched and summary["switched"] is False
    assert summary["unfinished"] == "the indexer stopped before it caught up"


def test_a_reindex_not_caught_up_in_time_leaves_the_alias_where_it_was(monkeypatch) -> None:
    summary, store = _reindex(monkeypatch, lambda stop: stop.wait() and None, seen=9.0)
    assert not store.switched
    assert summary["unfinished"] == "not caught up within 1 s (9 of 10 events)"


def test_a_reindex_caught_up_moves_the_alias(monkeypatch) -> None:
    summary, store = _reindex(monkeypatch, lambda stop: stop.wait() and None, seen=10.0)
    assert store.switched and summary["switched"] is True and summary["unfinished"] == ""
