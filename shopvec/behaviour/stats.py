"""The shared counts: co-occurrence per item and popularity per category, bounded and durable.

Rows are per shard (the user-events partition that feeds them), so exactly one worker writes a
row at a time and a read-modify-write never races another worker; readers add the shards up.

- An item row ("i", shard, item): `total` is the number of users with the item in their window,
  `counts` its co-occurring items with how many users have both.
- A category row ("c", shard, category): `counts` is the decayed popularity of its items,
  decayed to `at_ms`; ALL_CATEGORIES ("*") holds every item.

Each row is bounded: past twice its limit it keeps its strongest `limit` entries. A row whose
counts reach zero stays, empty, so that its watermark does too.

A change from a message is applied to a row only if the message's offset is above the row's
`applied_offset`, so a batch replayed after a crash (the rows are written before the users) adds
nothing twice. A change from a message of another partition than the row's shard (a user whose
events moved: the topic was given more partitions) is checked against that partition's own
applied offset, in `offsets`. Changes that come from no message (expiry) carry an op id instead,
remembered in `ops` (the last MAX_OPS); expiry drops its op ids again once its users are deleted
(shopvec.behaviour.engine), so that nothing pushes out those a retry will look for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from shopvec.behaviour.taste import decay
from shopvec.behaviour.window import Contribution

__all__ = ["MAX_OPS", "RowKind", "StatsRow", "StatsUpdate", "Tag", "row_key", "settle"]

RowKind = Literal["i", "c"]
Tag = int | str | tuple[int, int]
"""What a row checks a change by: an offset of the row's shard's partition, an op id, or another
partition and an offset of it."""
MAX_OPS = 64
_DROP = 1e-9


def row_key(kind: RowKind, shard: int, name: str) -> str:
    return f"{kind}:{shard}:{name}"


@dataclass
class StatsRow:
    kind: RowKind
    shard: int
    name: str
    counts: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    at_ms: int = 0
    applied_offset: int = -1
    ops: list[str] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    """The applied offset of each other partition whose messages changed the row."""

    @property
    def key(self) -> str:
        return row_key(self.kind, self.shard, self.name)

    @property
    def empty(self) -> bool:
        return not self.counts and abs(self.total) <= _DROP

    def add_count(self, item: str, change: float) -> None:
        if item not in self.counts and change < 0:
            return  # pruned earlier: nothing of it is left to take back
        value = self.counts.get(item, 0.0) + change
        if value > _DROP:
            self.counts[item] = value
        else:
            self.counts.pop(item, None)

    def add_popularity(self, item: str, amount: float, at_ms: int, half_life_ms: float) -> None:
        if at_ms > self.at_ms:
            factor = decay(at_ms - self.at_ms, half_life_ms)
            self.counts = {k: v * factor for k, v in self.counts.items() if v * factor > _DROP}
            self.at_ms = at_ms
        self.add_count(item, amount * decay(self.at_ms - at_ms, half_life_ms))

    def prune(self, limit: int) -> None:
        if len(self.counts) > 2 * limit:
            top = sorted(self.counts.items(), key=lambda kv: -kv[1])[:limit]
            self.counts = dict(top)


@dataclass
class StatsUpdate:
    """The changes of one batch, each with the tag (Tag) of the message or op it came from."""

    half_life_ms: float
    changes: list[tuple[int, Tag, Contribution]] = field(default_factory=list)
    """(shard, tag, contribution)."""

    def add(self, shard: int, tag: Tag, contribution: Contribution) -> None:
        """Changes with the same shard and tag (one message) are merged: a row checks a tag
        once."""
        if not contribution:
            return
        if self.changes and self.changes[-1][:2] == (shard, tag):
            self.changes[-1][2].merge(contribution)
        else:
            self.changes.append((shard, tag, contribution))

    def tags(self) -> set[str]:
        """The op ids of the changes (the offsets left out)."""
        return {tag for _, tag, _ in self.changes if isinstance(tag, str)}

    def keys(self) -> set[str]:
        keys: set[str] = set()
        for shard, _, c in self.changes:
            keys.update(row_key("i", shard, a) for a, _ in c.pairs)
            keys.update(row_key("i", shard, item) for item in c.users)
            keys.update(row_key("c", shard, cat) for cat, _, _, _ in c.popularity)
        return keys

    def apply(self, rows: dict[str, StatsRow], limits: dict[RowKind, int]) -> list[StatsRow]:
        """Applies the changes to `rows` (creating missing ones); returns the rows changed."""
        changed: dict[str, StatsRow] = {}
        # Op ids each row held when read, and those marked since: a row keeps the last
        # MAX_OPS, and one batch's own marks must not push out the ids it still checks.
        known: dict[str, set[str]] = {}
        for shard, tag, c in self.changes:
            rows_of = _RowsOf(rows, shard, tag, known)
            for item, change in c.users.items():
                if (r := rows_of.row("i", item)) is not None:
                    r.total += change
            for (a, b), change in c.pairs.items():
                if (r := rows_of.row("i", a)) is not None:
                    r.add_count(b, change)
            for cat, item, amount, at_ms in c.popularity:
                if (r := rows_of.row("c", cat)) is not None:
                    r.add_popularity(item, amount, at_ms, self.half_life_ms)
            for key, r in rows_of.touched.items():
                _mark(r, tag)
                if isinstance(tag, str):
                    known[key].add(tag)
                changed[key] = r
        for r in changed.values():
            r.prune(limits[r.kind])
            r.total = r.total if r.total > _DROP else 0.0
        return list(changed.values())


def settle(rows: Iterable[StatsRow], ops: set[str]) -> list[StatsRow]:
    """The rows that held any of `ops`, without them: changes whose retry can no longer come."""
    out = []
    for r in rows:
        kept = [op for op in r.ops if op not in ops]
        if len(kept) != len(r.ops):
            r.ops = kept
            out.append(r)
    return out


class _RowsOf:
    """The rows one change may touch: created when missing, None when it already holds it."""

    def __init__(
        self, rows: dict[str, StatsRow], shard: int, tag: Tag, known: dict[str, set[str]]
    ) -> None:
        self._rows = rows
        self._shard = shard
        self._tag = tag
        self._known = known
        self.touched: dict[str, StatsRow] = {}

    def row(self, kind: RowKind, name: str) -> StatsRow | None:
        key = row_key(kind, self._shard, name)
        if key in self.touched:
            return self.touched[key]
        r = self._rows.get(key)
        if r is None:
            r = self._rows[key] = StatsRow(kind, self._shard, name)
        ops = self._known.setdefault(key, set(r.ops))
        if not _fresh(r, self._tag, ops):
            return None
        self.touched[key] = r
        return r


def _fresh(row: StatsRow, tag: Tag, ops: set[str]) -> bool:
    if isinstance(tag, int):
        return tag > row.applied_offset
    if isinstance(tag, tuple):
        partition, offset = tag
        return offset > row.offsets.get(partition, -1)
    return tag not in ops


def _mark(row: StatsRow, tag: Tag) -> None:
    if isinstance(tag, int):
        row.applied_offset = max(row.applied_offset, tag)
    elif isinstance(tag, tuple):
        partition, offset = tag
        row.offsets[partition] = max(row.offsets.get(partition, -1), offset)
    else:
        row.ops = [*row.ops, tag][-MAX_OPS:]
