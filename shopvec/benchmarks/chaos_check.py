"""What the chaos benchmark compares at the end, each against an independent answer.

- Products: the collection against the catalogue's latest events, and each row's vectors
  against a fresh in-process encode of the same product by the same code.
- Users: the users collection against an in-process replay of the same click events, in each
  partition's order, through the same engine over in-memory stores.
- Encoding: the indexer's "batch written" log lines against the kills: work that a killed
  indexer had already written (or committed) must not be encoded again after its restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schemas.product import ProductDelete, ProductUpsert
from schemas.user_event import ForgetUser, UserEvent
from shopvec.behaviour import BehaviourEngine, Pseudonymiser
from shopvec.behaviour.engine import Inbound
from shopvec.behaviour.memory import InMemoryStatsStore, InMemoryUserStore
from shopvec.behaviour.stores import UserStore
from shopvec.settings import Settings
from shopvec.store.base import ProductStore

__all__ = [
    "Delivered",
    "Kill",
    "check_products",
    "check_reencoding",
    "check_users",
    "fresh_vectors",
    "replay_users",
]

VECTOR_TOLERANCE = 1e-4
"""Largest 1 - cosine between a stored vector and a fresh encode of the same product (float32
sums in other batch shapes differ in the last bits, nothing more)."""


@dataclass(frozen=True)
class Delivered:
    """A click event as the broker stored it: the partition is the user's shard."""

    event: UserEvent | ForgetUser
    partition: int
    offset: int


@dataclass
class Kill:
    worker: str
    pid: int
    at_s: float
    committed: dict[int, int] = field(default_factory=dict)
    """The worker group's committed offsets right after the kill, per partition."""
    back_s: float | None = None
    """When it answered (was ready) again."""


def _cos_gap(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    return 1.0 - float(np.dot(a, b)) / (na * nb)


# -- products ---------------------------------------------------------------------------------


def fresh_vectors(
    settings: Settings, products: Sequence[ProductUpsert], batch: int = 32
) -> dict[str, dict[str, np.ndarray]]:
    """Each product encoded and fused again, in this process, by the indexer's own code."""
    from shopvec.imaging import ImageLoader
    from shopvec.indexing import ProductIndexer
    from shopvec.runtime import build_encoder, build_fusion, collection_spec
    from shopvec.store.memory import InMemoryProductStore

    encoder = build_encoder(settings)
    fusion = build_fusion(settings, encoder)
    store = InMemoryProductStore(collection_spec(settings, encoder, fusion))
    indexer = ProductIndexer(encoder, store, ImageLoader(settings.images), fusion)
    for i in range(0, len(products), batch):
        indexer.apply(products[i : i + batch])
    return store.vectors([p.id for p in products])


def check_products(
    store: ProductStore,
    expected: Mapping[str, ProductUpsert | ProductDelete],
    fresh: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, Any]:
    rows = store.get(sorted(expected))
    stored = store.vectors([i for i, e in expected.items() if isinstance(e, ProductUpsert)])
    lost: list[str] = []
    mismatched: list[str] = []
    worst_gap = 0.0
    for pid, event in expected.items():
        row = rows.get(pid)
        if isinstance(event, ProductDelete):
            if row is not None and not row["deleted"]:
                mismatched.append(f"{pid}: deleted at version {event.version}, still searchable")
            continue
        if row is None or row["deleted"] or row["version"] < event.version:
            lost.append(f"{pid}: version {event.version} missing")
            continue
        if row["version"] != event.version:
            mismatched.append(f"{pid}: version {row['version']}, expected {event.version}")
            continue
        for name, want in fresh.get(pid, {}).items():
            gap = _cos_gap(np.asarray(stored[pid][name]), np.asarray(want))
            worst_gap = max(worst_gap, gap)
            if gap > VECTOR_TOLERANCE:
                mismatched.append(f"{pid}: {name} differs from a fresh encode (1-cos {gap:.2e})")
                break
    total = store.count()
    return {
        "expected": len(expected),
        "expected_live": sum(isinstance(e, ProductUpsert) for e in expected.values()),
        "rows": total,
        "lost": len(lost),
        # Upserts keyed by product id: a second row for one id would be a doubled write.
        "doubled": max(0, total - len(rows)),
        "mismatched": len(mismatched),
        "worst_vector_gap": worst_gap,
        "examples": (lost + mismatched)[:5],
    }


# -- users ------------------------------------------------------------------------------------


def replay_users(
    settings: Settings, delivered: Iterable[Delivered], products: ProductStore
) -> InMemoryUserStore:
    """The same events through the same engine, partition by partition in offset order."""
    b = settings.behaviour
    users = InMemoryUserStore()
    engine = BehaviourEngine(
        users,
        InMemoryStatsStore(),
        products,
        Pseudonymiser(b.pseudonym_key, b.previous_pseudonym_keys),
        b,
    )
    by_partition: dict[int, list[Delivered]] = {}
    for d in delivered:
        by_partition.setdefault(d.partition, []).append(d)
    for part in by_partition.values():
        part.sort(key=lambda d: d.offset)
        for i in range(0, len(part), b.batch_size):
            engine.apply(
                [Inbound(d.event, d.partition, d.offset) for d in part[i : i + b.batch_size]]
            )
    return users


def check_users(actual: UserStore, expected: InMemoryUserStore) -> dict[str, Any]:
    want = expected.get(sorted(expected.rows))
    got = actual.get(sorted(want))
    lost: list[str] = []
    doubled: list[str] = []
    mismatched: list[str] = []
    for pseudonym, row in want.items():
        have = got.get(pseudonym)
        name = pseudonym[:12]
        if have is None:
            lost.append(f"user {name}: no row")
            continue
        w, h = float(row["weight"]), float(have["weight"])
        if h > w * (1 + 1e-4) + 1e-9:
            doubled.append(f"user {name}: weight {h:.6f}, replay {w:.6f}")
        elif h < w * (1 - 1e-4) - 1e-9:
            lost.append(f"user {name}: weight {h:.6f}, replay {w:.6f}")
        elif _cos_gap(np.asarray(have["taste_vec"]), np.asarray(row["taste_vec"])) > 1e-4:
            mismatched.append(f"user {name}: taste vector differs from the replay")
        elif int(have["last_event_ms"]) != int(row["last_event_ms"]):
            mismatched.append(f"user {name}: last event differs from the replay")
    rows = actual.count()
    # Rows the replay does not have: users who asked to be forgotten, say.
    extra = max(0, rows - len(got))
    if extra:
        mismatched.append(f"{extra} user rows that the replay does not have")
    return {
        "expected": len(want),
        "rows": rows,
        "lost": len(lost),
        "doubled": len(doubled),
        "mismatched": len(mismatched) - bool(extra) + extra,
        "examples": (lost + doubled + mismatched)[:5],
    }


# -- encoding after kills -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Written:
    pid: int
    ranges: dict[int, tuple[int, int]]
    encoded: int


def _written_batches(log_file: Path) -> list[_Written]:
    out: list[_Written] = []
    for line in log_file.read_text(errors="replace").splitlines():
        if "batch written" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not str(rec.get("msg", "")).startswith("batch written") or "offsets" not in rec:
            continue
        ranges = {int(p): (int(a), int(b)) for p, (a, b) in rec.get("offsets", {}).items()}
        encoded = max(int(rec.get("encoded_texts", 0)), int(rec.get("encoded_images", 0)))
        out.append(_Written(int(rec["pid"]), ranges, encoded))
    return out


def check_reencoding(log_file: Path, kills: Sequence[Kill]) -> dict[str, Any]:
    """Products encoded again after a restart beyond what the killed process left undone:
    a later batch may encode at most as many products as it holds messages that no earlier
    process had written and that were past the committed offsets at the last kill."""
    batches = _written_batches(log_file)
    killed = {k.pid: k for k in kills}
    written: dict[int, set[int]] = {}
    committed: dict[int, int] = {}
    replayed = beyond = 0
    seen_pids: list[int] = []
    for b in batches:
        if not seen_pids or seen_pids[-1] != b.pid:
            if seen_pids and seen_pids[-1] in killed:
                for p, o in killed[seen_pids[-1]].committed.items():
                    committed[p] = max(committed.get(p, 0), o)
            seen_pids.append(b.pid)
        fresh = 0
        for p, (first, last) in b.ranges.items():
            done = written.setdefault(p, set())
            for o in range(first, last + 1):
                if o in done or o < committed.get(p, 0):
                    replayed += 1
                else:
                    fresh += 1
                done.add(o)
        beyond += max(0, b.encoded - fresh)
    return {
        "batches_logged": len(batches),
        "processes": len(set(seen_pids)),
        "replayed_messages": replayed,
        "reencoded_beyond_uncommitted": beyond,
    }
