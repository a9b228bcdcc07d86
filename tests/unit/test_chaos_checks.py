"""The chaos benchmark's plan and its end-state checks, on in-memory stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.product import ProductDelete, ProductUpsert
from schemas.user_event import UserEvent
from shopvec.behaviour.memory import InMemoryUserStore
from shopvec.benchmarks.chaos_check import (
    Delivered,
    Kill,
    check_products,
    check_reencoding,
    check_users,
    replay_users,
)
from shopvec.benchmarks.chaos_workload import plan_chaos
from shopvec.settings import Settings

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def test_the_plan_is_seeded_and_keeps_each_products_order() -> None:
    a = plan_chaos(products=200, clicks=500, users=20, seed=3, now=T0)
    b = plan_chaos(products=200, clicks=500, users=20, seed=3, now=T0)
    assert [e.model_dump() for e in a.catalogue] == [e.model_dump() for e in b.catalogue]
    assert len(a.clicks) == 500 and len(a.anchors) == 20
    anchors = {p.id for p in a.anchors}
    assert {e.product_id for e in a.clicks if isinstance(e, UserEvent)} <= anchors
    # Versions only grow along the stream, per product; deletes and updates are all there.
    last: dict[str, int] = {}
    for e in [*a.anchors, *a.catalogue]:
        assert e.version > last.get(e.id, 0)
        last[e.id] = e.version
    kinds = {type(e).__name__ for e in a.catalogue}
    assert kinds == {"ProductUpsert", "ProductDelete"}
    assert any(e.version == 3 for e in a.catalogue)  # new words
    assert {i: e.version for i, e in a.expected.items()} == last


class FakeProducts:
    """Only what check_products reads: rows, vectors and a count."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.vecs: dict[str, dict[str, np.ndarray]] = {}

    def put(self, pid: str, version: int, deleted: bool = False, vec: Any = (1.0, 0.0)) -> None:
        self.rows[pid] = {"id": pid, "version": version, "deleted": deleted}
        self.vecs[pid] = {"fused_vec": np.asarray(vec, dtype=np.float32)}

    def get(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: self.rows[i] for i in ids if i in self.rows}

    def vectors(self, ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
        return {i: self.vecs[i] for i in ids if i in self.vecs}

    def count(self) -> int:
        return len(self.rows)


def _upsert(pid: str, version: int) -> ProductUpsert:
    return ProductUpsert(id=pid, version=version, updated_at=T0, title=pid)


def test_check_products_names_lost_stale_resurrected_and_changed_vectors() -> None:
    expected = {
        "ok": _upsert("ok", 2),
        "missing": _upsert("missing", 1),
        "stale": _upsert("stale", 3),
        "gone": ProductDelete(id="gone", version=4, updated_at=T0),
        "back": ProductDelete(id="back", version=4, updated_at=T0),
        "drift": _upsert("drift", 1),
    }
    store = FakeProducts()
    store.put("ok", 2)
    store.put("stale", 2)
    store.put("gone", 4, deleted=True)
    store.put("back", 1)
    store.put("drift", 1, vec=(0.0, 1.0))
    fresh = {pid: {"fused_vec": np.asarray([1.0, 0.0])} for pid in expected}
    out = check_products(store, expected, fresh)  # type: ignore[arg-type]
    assert (out["lost"], out["doubled"], out["mismatched"]) == (2, 0, 2)

    clean = FakeProducts()
    clean.put("ok", 2)
    clean.put("gone", 4, deleted=True)
    out = check_products(clean, {k: expected[k] for k in ("ok", "gone")}, fresh)  # type: ignore[arg-type]
    assert (out["lost"], out["doubled"], out["mismatched"]) == (0, 0, 0)


class Products:
    """Anchor products for the behaviour engine: a fused vector and a category."""

    def get(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {
            i: {"fused_vec": [1.0, float(n)], "category": ["c"], "brand": "b"}
            for n, i in enumerate(ids)
        }


def _clicks(n: int) -> list[Delivered]:
    out = []
    for i in range(n):
        event = UserEvent(
            event_id=f"e{i}",
            user_id=f"u{i % 3}",
            product_id=f"p{i % 4}",
            type="click",
            timestamp=T0 + timedelta(seconds=i),
        )
        out.append(Delivered(event, i % 3, i // 3))
    return out


def test_users_match_a_replay_and_a_doubled_event_shows() -> None:
    settings = Settings()
    clicks = _clicks(30)
    expected = replay_users(settings, clicks, Products())  # type: ignore[arg-type]
    assert expected.count() == 3
    # The same events delivered again, in other batches: the ids make them count once.
    actual = replay_users(settings, clicks + clicks[:10], Products())  # type: ignore[arg-type]
    out = check_users(actual, expected)
    assert (out["lost"], out["doubled"], out["mismatched"]) == (0, 0, 0)

    tampered = InMemoryUserStore()
    tampered.rows = {k: dict(v) for k, v in expected.rows.items()}
    first = sorted(tampered.rows)[0]
    tampered.rows[first]["weight"] *= 2
    tampered.rows["stranger"] = dict(tampered.rows[first])
    out = check_users(tampered, expected)
    assert (out["lost"], out["doubled"], out["mismatched"]) == (0, 1, 1)


def _line(pid: int, ranges: dict[str, list[int]], encoded: int) -> str:
    return json.dumps(
        {
            "msg": "batch written: ...",
            "pid": pid,
            "offsets": ranges,
            "encoded_texts": encoded,
            "encoded_images": encoded,
        }
    )


@pytest.mark.parametrize(
    ("after_restart", "beyond"),
    [
        # The killed process had written 0-9; its successor replays them without encoding.
        ([_line(2, {"0": [0, 9]}, 0), _line(2, {"0": [10, 19]}, 10)], 0),
        # A replayed batch that encodes what was already written is counted.
        ([_line(2, {"0": [5, 14]}, 10)], 5),
    ],
)
def test_reencoding_after_a_kill_is_counted_beyond_what_was_undone(
    tmp_path: Path, after_restart: list[str], beyond: int
) -> None:
    log = tmp_path / "indexer.log"
    lines = [_line(1, {"0": [0, 9]}, 10), "plain text", *after_restart]
    log.write_text("\n".join(lines))
    out = check_reencoding(log, [Kill("indexer", 1, 1.0, {0: 5})])
    assert out["reencoded_beyond_uncommitted"] == beyond
    assert out["processes"] == 2
