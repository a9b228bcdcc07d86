"""The behaviour stores on Milvus: the users collection and its shared-counts collection.

Every call carries a timeout (see shopvec.store.milvus), and each store keeps its collection
loaded (see shopvec.store.loading). The users collection is keyed by pseudonym and holds the
taste vector (the products' fused dimension) with the user's row; the counts collection is
named after it (`<users>_counts`) and keyed by row key. Milvus wants a vector field in every
collection: the counts rows carry a two-dimensional zero vector.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

from pymilvus import DataType, MilvusClient

from shopvec.behaviour.stats import RowKind, StatsRow
from shopvec.store.loading import LOAD_TIMEOUT_S, CollectionLoader, reloading
from shopvec.store.milvus import get_chunked, key_filter, milvus_literal

__all__ = ["MilvusStatsStore", "MilvusUserStore", "counts_collection"]

log = logging.getLogger(__name__)

_CHUNK = 256
_USER_FIELDS = [
    "pseudonym",
    "shard",
    "taste_vec",
    "weight",
    "taste_ms",
    "last_event_ms",
    "prefs",
    "recent",
    "window",
]
_STATS_FIELDS = [
    "key",
    "kind",
    "shard",
    "name",
    "counts",
    "total",
    "at_ms",
    "applied_offset",
    "ops",
]


def counts_collection(users_collection: str) -> str:
    return f"{users_collection}_counts"


def _create(client: MilvusClient, name: str, schema: Any, vector: str, timeout: float) -> None:
    """Safe against a concurrent creator: whoever loses the race finds it there."""
    if client.has_collection(name, timeout=timeout):
        return
    index = client.prepare_index_params()
    index.add_index(vector, index_type="FLAT", metric_type="IP")
    try:
        client.create_collection(name, schema=schema, index_params=index, timeout=timeout)
        log.info("created collection %s", name)
    except Exception:
        if not client.has_collection(name, timeout=timeout):
            raise


class MilvusUserStore:
    def __init__(
        self,
        client: MilvusClient,
        name: str,
        dim: int,
        *,
        timeout_s: float,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        self._client = client
        self.name = name
        self.dim = dim
        self._timeout = timeout_s
        self._loader = CollectionLoader(client, name, timeout_s=load_timeout_s)

    @property
    def loader(self) -> CollectionLoader:
        return self._loader

    def ensure(self) -> None:
        """Creates the collection, or checks the one there; either way leaves it loaded."""
        c = self._client
        if c.has_collection(self.name, timeout=self._timeout):
            fields = c.describe_collection(self.name, timeout=self._timeout)["fields"]
            dim = next(int(f["params"]["dim"]) for f in fields if f["name"] == "taste_vec")
            if dim != self.dim:
                raise RuntimeError(
                    f"users collection {self.name} holds {dim}-d taste vectors but products are "
                    f"{self.dim}-d; set SHOPVEC_MILVUS__USERS_COLLECTION to a new name"
                )
        else:
            self._create()
        self._loader.ensure()

    def _create(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pseudonym", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("shard", DataType.INT64)
        schema.add_field("taste_vec", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("weight", DataType.DOUBLE)
        schema.add_field("taste_ms", DataType.INT64)
        schema.add_field("last_event_ms", DataType.INT64)
        schema.add_field("prefs", DataType.JSON)
        schema.add_field("recent", DataType.JSON)
        schema.add_field("window", DataType.JSON)
        _create(self._client, self.name, schema, "taste_vec", self._timeout)

    @reloading
    def get(self, pseudonyms: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = get_chunked(
            self._client, self.name, pseudonyms, _USER_FIELDS, self._timeout, key="pseudonym"
        )
        return {r["pseudonym"]: dict(r) for r in rows}

    @reloading
    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self._client.upsert(self.name, data=list(rows), timeout=self._timeout)

    @reloading
    def delete(self, pseudonyms: Sequence[str]) -> None:
        if pseudonyms:
            self._client.delete(
                self.name, filter=key_filter("pseudonym", pseudonyms), timeout=self._timeout
            )

    @reloading
    def inactive(
        self, before_ms: int, shards: Collection[int] | None, limit: int
    ) -> list[dict[str, Any]]:
        expr = f"last_event_ms < {int(before_ms)}"
        if shards is not None:
            if not shards:
                return []
            expr += f" and shard in {milvus_literal(sorted(shards))}"
        rows = self._client.query(
            self.name, filter=expr, output_fields=_USER_FIELDS, limit=limit, timeout=self._timeout
        )
        return [dict(r) for r in rows]

    @reloading
    def count(self) -> int:
        res = self._client.query(
            self.name, filter='pseudonym != ""', output_fields=["count(*)"], timeout=self._timeout
        )
        return int(res[0]["count(*)"])


class MilvusStatsStore:
    def __init__(
        self,
        client: MilvusClient,
        name: str,
        *,
        timeout_s: float,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        self._client = client
        self.name = name
        self._timeout = timeout_s
        self._loader = CollectionLoader(client, name, timeout_s=load_timeout_s)

    @property
    def loader(self) -> CollectionLoader:
        return self._loader

    def ensure(self) -> None:
        """Creates the collection unless it is there; either way leaves it loaded."""
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("kind", DataType.VARCHAR, max_length=4)
        schema.add_field("shard", DataType.INT64)
        schema.add_field("name", DataType.VARCHAR, max_length=256)
        schema.add_field("counts", DataType.JSON)
        schema.add_field("total", DataType.DOUBLE)
        schema.add_field("at_ms", DataType.INT64)
        schema.add_field("applied_offset", DataType.INT64)
        schema.add_field("ops", DataType.JSON)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
        _create(self._client, self.name, schema, "vec", self._timeout)
        self._loader.ensure()

    @reloading
    def get(self, keys: Sequence[str]) -> dict[str, StatsRow]:
        rows = get_chunked(self._client, self.name, keys, _STATS_FIELDS, self._timeout, key="key")
        return {r["key"]: _stats_row(r) for r in rows}

    @reloading
    def find(self, kind: RowKind, names: Sequence[str]) -> list[StatsRow]:
        out: list[StatsRow] = []
        wanted = list(dict.fromkeys(names))
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            rows = self._client.query(
                self.name,
                filter=f"kind == {milvus_literal(kind)} and name in {milvus_literal(chunk)}",
                output_fields=_STATS_FIELDS,
                timeout=self._timeout,
            )
            out.extend(_stats_row(r) for r in rows)
        return out

    @reloading
    def upsert(self, rows: Sequence[StatsRow]) -> None:
        data = [
            {
                "key": r.key,
                "kind": r.kind,
                "shard": r.shard,
                "name": r.name,
                "counts": r.counts,
                "total": float(r.total),
                "at_ms": int(r.at_ms),
                "applied_offset": int(r.applied_offset),
                "ops": _ops_json(r),
                "vec": [0.0, 0.0],
            }
            for r in rows
        ]
        for start in range(0, len(data), _CHUNK):
            self._client.upsert(self.name, data=data[start : start + _CHUNK], timeout=self._timeout)

    @reloading
    def all(self) -> list[StatsRow]:
        rows = self._client.query(
            self.name, filter='key != ""', output_fields=_STATS_FIELDS, timeout=self._timeout
        )
        return [_stats_row(r) for r in rows]


def _stats_row(r: dict[str, Any]) -> StatsRow:
    ops, offsets = _read_ops(r.get("ops"))
    return StatsRow(
        kind=r["kind"],
        shard=int(r["shard"]),
        name=str(r["name"]),
        counts={str(k): float(v) for k, v in (r.get("counts") or {}).items()},
        total=float(r["total"]),
        at_ms=int(r["at_ms"]),
        applied_offset=int(r["applied_offset"]),
        ops=ops,
        offsets=offsets,
    )


def _ops_json(r: StatsRow) -> Any:
    """The op ids, and other partitions' applied offsets where there are any (a row written
    before them holds the list of op ids alone, and is read so)."""
    if not r.offsets:
        return r.ops
    return {"ids": r.ops, "offsets": {str(p): o for p, o in r.offsets.items()}}


def _read_ops(value: Any) -> tuple[list[str], dict[int, int]]:
    if isinstance(value, dict):
        offsets = value.get("offsets") or {}
        return [str(o) for o in value.get("ids") or []], {
            int(p): int(o) for p, o in offsets.items()
        }
    return [str(o) for o in value or []], {}
