"""Where behaviour lives: the users collection and the shared-counts collection (interfaces).

Milvus is the only store. Rows are plain dicts at this boundary (UserProfile.to_row and
StatsRow fields), so the in-memory twins and the Milvus stores hold exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from shopvec.behaviour.stats import RowKind, StatsRow

__all__ = ["StatsStore", "UserStore"]


class UserStore(Protocol):
    def ensure(self) -> None: ...

    def get(self, pseudonyms: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None: ...

    def delete(self, pseudonyms: Sequence[str]) -> None: ...

    def inactive(
        self, before_ms: int, shards: Collection[int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Users whose last event is older than before_ms, in the given shards (None: all)."""
        ...

    def count(self) -> int: ...


class StatsStore(Protocol):
    def ensure(self) -> None: ...

    def get(self, keys: Sequence[str]) -> dict[str, StatsRow]: ...

    def find(self, kind: RowKind, names: Sequence[str]) -> list[StatsRow]:
        """The rows of these items or categories, from every shard."""
        ...

    def upsert(self, rows: Sequence[StatsRow]) -> None: ...

    def all(self) -> list[StatsRow]:
        """Every row: for tests and small tools, not for serving."""
        ...
