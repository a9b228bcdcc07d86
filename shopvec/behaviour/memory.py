"""Honest in-memory twins of the behaviour stores, for unit tests and the offline evaluation."""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from typing import Any

from shopvec.behaviour.stats import RowKind, StatsRow

__all__ = ["InMemoryStatsStore", "InMemoryUserStore"]


class InMemoryUserStore:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.upserts = 0

    def ensure(self) -> None:
        return None

    def get(self, pseudonyms: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {p: copy.deepcopy(self.rows[p]) for p in pseudonyms if p in self.rows}

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.rows[row["pseudonym"]] = copy.deepcopy(row)
        self.upserts += len(rows)

    def delete(self, pseudonyms: Sequence[str]) -> None:
        for p in pseudonyms:
            self.rows.pop(p, None)

    def inactive(
        self, before_ms: int, shards: Collection[int] | None, limit: int
    ) -> list[dict[str, Any]]:
        out = [
            copy.deepcopy(r)
            for r in self.rows.values()
            if r["last_event_ms"] < before_ms and (shards is None or r["shard"] in shards)
        ]
        return out[:limit]

    def count(self) -> int:
        return len(self.rows)


class InMemoryStatsStore:
    def __init__(self, *, copy_rows: bool = True) -> None:
        # The offline evaluation writes millions of counts: it may skip the defensive copies,
        # since it never holds a row across batches.
        self.rows: dict[str, StatsRow] = {}
        self._copy = copy.deepcopy if copy_rows else (lambda r: r)

    def ensure(self) -> None:
        return None

    def get(self, keys: Sequence[str]) -> dict[str, StatsRow]:
        return {k: self._copy(self.rows[k]) for k in keys if k in self.rows}

    def find(self, kind: RowKind, names: Sequence[str]) -> list[StatsRow]:
        wanted = set(names)
        return [self._copy(r) for r in self.rows.values() if r.kind == kind and r.name in wanted]

    def upsert(self, rows: Sequence[StatsRow]) -> None:
        for row in rows:
            self.rows[row.key] = self._copy(row)

    def all(self) -> list[StatsRow]:
        return [self._copy(r) for r in self.rows.values()]
