"""ProductStore on Milvus (Milvus Lite server, standalone or cluster) through pymilvus.

Every call carries a timeout: without one pymilvus retries for minutes, far past the consumer's
max.poll.interval.ms. The store loads its collection at start and again whenever Milvus answers
that it is not loaded (see shopvec.store.loading).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymilvus import (
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    RRFRanker,
    WeightedRanker,
)

from schemas.product import BRAND_MAX_BYTES, CATEGORY_MAX_BYTES, PRODUCT_ID_MAX_LENGTH
from shopvec.encoders.base import EncoderInfo
from shopvec.similarity import score_from_distance
from shopvec.store.base import (
    LEXICAL_FIELDS,
    LEXICAL_SOURCES,
    SCALAR_OUTPUT_FIELDS,
    TEXT_MAX_BYTES,
    TITLE_MAX_BYTES,
    VECTOR_FIELDS,
    CollectionSpec,
    Hit,
    HybridRanker,
    LexicalField,
    SearchFilter,
    StoredState,
    VectorField,
)
from shopvec.store.loading import LOAD_TIMEOUT_S, CollectionLoader, reloading

__all__ = [
    "ANALYZER",
    "MilvusProductStore",
    "filter_expression",
    "get_chunked",
    "key_filter",
    "milvus_literal",
    "spec_from_collection",
]

log = logging.getLogger(__name__)

_STATE_FIELDS = ["id", "version", "deleted", "text_hash", "image_hash", "doc"]
_GET_CHUNK = 256
_TEXT_FIELDS = frozenset(LEXICAL_SOURCES.values())

ANALYZER: dict[str, Any] = {"tokenizer": "jieba", "filter": ["lowercase"]}
"""One analyzer for English, Chinese and text that mixes them: jieba cuts Chinese into words
and Latin-script text at spaces and punctuation; tokens are lowercased. Milvus Lite 3.2 offers
the standard and jieba tokenizers only (no stemming), Milvus 2.5+ these and more."""


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def milvus_literal(value: Any) -> str:
    """A value as a literal of Milvus's filter expressions: a string in double quotes with the
    escapes every Milvus parser reads (backslash, quote, newline, carriage return, tab) and
    every other character as it is, true or false, a finite number, or a list of these.

    Not JSON: json.dumps writes other control characters as \\u escapes, which Milvus Lite's
    parser refuses, and infinities and NaN as bare words, which it takes for field names."""
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no literal in a Milvus expression")
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(milvus_literal(v) for v in value) + "]"
    raise TypeError(f"no Milvus literal for a {type(value).__name__}")


def key_filter(field: str, keys: Sequence[str]) -> str:
    """Rows by primary key, as a filter whose keys are quoted literals. pymilvus's `ids=` (get,
    delete) puts string keys between single quotes without escaping them, so a key holding a
    quote rewrote the filter: a delete of `x'] or id not in ['` removed every row."""
    return f"{field} in {milvus_literal(list(keys))}"


def filter_expression(flt: SearchFilter | None) -> str:
    flt = flt or SearchFilter()
    parts = ["deleted == false"]
    if flt.category is not None:
        parts.append(f"ARRAY_CONTAINS(category, {milvus_literal(flt.category)})")
    if flt.brand is not None:
        parts.append(f"brand == {milvus_literal(flt.brand)}")
    if flt.price_min is not None:
        parts.append(f"price >= {milvus_literal(float(flt.price_min))}")
    if flt.price_max is not None:
        parts.append(f"price >= 0 and price <= {milvus_literal(float(flt.price_max))}")
    if flt.in_stock is not None:
        parts.append(f"in_stock == {milvus_literal(flt.in_stock)}")
    for key, value in sorted(flt.attributes.items()):
        parts.append(f'doc["attributes"][{milvus_literal(key)}] == {milvus_literal(value)}')
    if flt.require_image:
        parts.append("has_image == true")
    if flt.require_text:
        parts.append("has_text == true")
    if flt.exclude_ids:
        parts.append(f"id not in {milvus_literal(flt.exclude_ids)}")
    return " and ".join(parts)


def spec_from_collection(
    client: MilvusClient, alias: str, *, timeout_s: float = 15.0
) -> CollectionSpec:
    """The spec of the collection an alias points at, read from Milvus (its properties and
    dimensions), for readers that load no encoder. Raises if the alias is missing."""
    desc = client.describe_collection(alias, timeout=timeout_s)
    props = desc.get("properties") or {}
    dims = {
        f["name"]: int(f["params"]["dim"]) for f in desc["fields"] if f["name"] in VECTOR_FIELDS
    }
    spec = CollectionSpec(
        alias=alias,
        encoder=EncoderInfo(
            props["shopvec.encoder_id"],
            props["shopvec.encoder_version"],
            joint_dim=dims["text_vec"],
            visual_dim=dims["visual_vec"],
        ),
        fusion_key=props["shopvec.fusion"],
        fused_dim=dims["fused_vec"],
        metric=props["shopvec.metric"],
    )
    if spec.name != desc["collection_name"]:
        raise RuntimeError(f"{alias} -> {desc['collection_name']} is not a shopvec collection")
    return spec


def get_chunked(
    client: MilvusClient,
    collection: str,
    ids: Sequence[str],
    fields: Sequence[str],
    timeout_s: float,
    key: str = "id",
) -> list[dict[str, Any]]:
    """Rows by primary key (the field `key`), a few hundred ids per call (each id is a term in
    the request), duplicates asked once."""
    wanted = list(dict.fromkeys(ids))
    rows: list[dict[str, Any]] = []
    for start in range(0, len(wanted), _GET_CHUNK):
        rows.extend(
            client.query(
                collection,
                filter=key_filter(key, wanted[start : start + _GET_CHUNK]),
                output_fields=list(fields),
                timeout=timeout_s,
            )
        )
    return rows


class MilvusProductStore:
    def __init__(
        self,
        client: MilvusClient,
        spec: CollectionSpec,
        *,
        timeout_s: float = 15.0,
        search_ef: int = 128,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._spec = spec
        self._timeout = timeout_s
        self._search_ef = search_ef
        self._loader = CollectionLoader(client, spec.name, timeout_s=load_timeout_s)
        self._lexical: bool | None = None

    @property
    def spec(self) -> CollectionSpec:
        return self._spec

    @property
    def lexical(self) -> bool:
        if self._lexical is None:
            desc = self._client.describe_collection(self._spec.name, timeout=self._timeout)
            names = {f["name"] for f in desc["fields"]}
            self._lexical = all(f in names for f in LEXICAL_FIELDS)
            if not self._lexical:
                log.warning(
                    "%s has no full-text fields (created before them): searches stay dense",
                    self._spec.name,
                )
        return self._lexical

    @property
    def collection(self) -> str:
        return self._spec.name

    @property
    def client(self) -> MilvusClient:
        return self._client

    @property
    def loader(self) -> CollectionLoader:
        return self._loader

    def close(self) -> None:
        self._client.close()

    # -- layout -----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Safe to call from several workers at once: whoever loses a race to create the
        collection or the alias finds it there and carries on. Leaves the collection loaded,
        and the one the alias points at if that is another (readers of the alias search it)."""
        name = self._spec.name
        if not self._client.has_collection(name, timeout=self._timeout):
            try:
                self._create(name)
            except Exception:
                if not self._client.has_collection(name, timeout=self._timeout):
                    raise
        if not self._alias_exists():
            try:
                self._client.create_alias(name, self._spec.alias, timeout=self._timeout)
                log.info("alias %s -> %s", self._spec.alias, name)
            except Exception:
                if not self._alias_exists():
                    raise
        target = self.alias_target()
        self._loader.ensure(*([target] if target not in (None, name) else []))

    def point_alias_here(self) -> None:
        """Switches the alias to this collection (readers of the alias move at once)."""
        if self._alias_exists():
            self._client.alter_alias(self._spec.name, self._spec.alias, timeout=self._timeout)
        else:
            self._client.create_alias(self._spec.name, self._spec.alias, timeout=self._timeout)
        log.info("alias %s -> %s", self._spec.alias, self._spec.name)

    def alias_target(self) -> str | None:
        if not self._alias_exists():
            return None
        desc = self._client.describe_alias(self._spec.alias, timeout=self._timeout)
        return str(desc["collection_name"])

    def _alias_exists(self) -> bool:
        # Listing, not describe_alias: pymilvus logs a "not found" as an error before raising.
        return self._spec.alias in self._client.list_aliases(timeout=self._timeout).get(
            "aliases", []
        )

    def _create(self, name: str) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=PRODUCT_ID_MAX_LENGTH)
        schema.add_field("version", DataType.INT64)
        schema.add_field("deleted", DataType.BOOL)
        schema.add_field("event_ms", DataType.INT64)
        schema.add_field("title", DataType.VARCHAR, max_length=TITLE_MAX_BYTES)
        schema.add_field("brand", DataType.VARCHAR, max_length=BRAND_MAX_BYTES)
        schema.add_field("price", DataType.DOUBLE)
        schema.add_field("in_stock", DataType.BOOL)
        schema.add_field(
            "category",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=16,
            max_length=CATEGORY_MAX_BYTES,
        )
        schema.add_field("has_image", DataType.BOOL)
        schema.add_field("has_text", DataType.BOOL)
        schema.add_field("text_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("image_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("doc", DataType.JSON)
        index = self._client.prepare_index_params()
        for sparse, source in LEXICAL_SOURCES.items():
            schema.add_field(
                source,
                DataType.VARCHAR,
                max_length=TEXT_MAX_BYTES[source],
                enable_analyzer=True,
                analyzer_params=ANALYZER,
            )
            schema.add_field(sparse, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name=f"{source}_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[source],
                    output_field_names=[sparse],
                )
            )
            index.add_index(sparse, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        for vfield, dim in self._spec.dims().items():
            schema.add_field(vfield, DataType.FLOAT_VECTOR, dim=dim)
            params: dict[str, Any] = {}
            if self._spec.index_type == "HNSW":
                params = {"M": self._spec.hnsw_m, "efConstruction": self._spec.hnsw_ef_construction}
            elif self._spec.index_type == "IVF_FLAT":
                params = {"nlist": 1024}
            index.add_index(
                vfield,
                index_type=self._spec.index_type,
                metric_type=self._spec.metric,
                params=params,
            )
        self._client.create_collection(
            name,
            schema=schema,
            index_params=index,
            properties=self._spec.properties(),
            timeout=self._timeout,
        )
        self._lexical = True
        log.info("created collection %s", name)

    # -- reads and writes -------------------------------------------------------------------

    @reloading
    def _get(self, ids: Sequence[str], fields: list[str]) -> list[dict[str, Any]]:
        return get_chunked(self._client, self._spec.name, ids, fields, self._timeout)

    def state(self, ids: Sequence[str]) -> dict[str, StoredState]:
        return {r["id"]: StoredState.from_row(r) for r in self._get(ids, _STATE_FIELDS)}

    def vectors(
        self, ids: Sequence[str], fields: Sequence[VectorField] = VECTOR_FIELDS
    ) -> dict[str, dict[str, np.ndarray]]:
        rows = self._get(ids, ["id", *fields])
        return {r["id"]: {f: np.asarray(r[f], dtype=np.float32) for f in fields} for r in rows}

    @reloading
    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        data = list(rows)
        if not self.lexical:
            data = [{k: v for k, v in r.items() if k not in _TEXT_FIELDS} for r in data]
        self._client.upsert(self._spec.name, data=data, timeout=self._timeout)

    @reloading
    def flush(self) -> None:
        # Until sealed, new rows are searched by brute force (in Milvus Lite, in Python):
        # searches slow down as unsealed rows pile up.
        self._client.flush(self._spec.name, timeout=self._timeout)

    @reloading
    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._client.delete(
                self._spec.name, filter=key_filter("id", ids), timeout=self._timeout
            )

    @reloading
    def search(
        self,
        field: VectorField,
        vectors: np.ndarray,
        limit: int,
        flt: SearchFilter | None = None,
        with_vectors: Sequence[VectorField] = (),
    ) -> list[list[Hit]]:
        data = [np.asarray(v, dtype=np.float32).tolist() for v in np.atleast_2d(vectors)]
        params = {"metric_type": self._spec.metric, "params": {"ef": max(self._search_ef, limit)}}
        # The physical collection, never the alias: this store's vectors come from this encoder
        # and fusion, and a query built by them must not meet another model's vectors while an
        # alias is being switched.
        result = self._client.search(
            self._spec.name,
            data=data,
            anns_field=field,
            limit=limit,
            filter=filter_expression(flt),
            output_fields=[*SCALAR_OUTPUT_FIELDS, *with_vectors],
            search_params=params,
            timeout=self._timeout,
        )
        metric = self._spec.metric
        return [
            [Hit(h["id"], score_from_distance(h["distance"], metric), h["entity"]) for h in hits]
            for hits in result
        ]

    def _dense_request(
        self, field: VectorField, vectors: np.ndarray, limit: int, expr: str
    ) -> AnnSearchRequest:
        return AnnSearchRequest(
            data=[np.asarray(v, dtype=np.float32).tolist() for v in np.atleast_2d(vectors)],
            anns_field=field,
            param={"metric_type": self._spec.metric, "params": {"ef": max(self._search_ef, limit)}},
            limit=limit,
            expr=expr,
        )

    @reloading
    def lexical_search(
        self,
        field: LexicalField,
        texts: Sequence[str],
        limit: int,
        flt: SearchFilter | None = None,
    ) -> list[list[Hit]]:
        if not self.lexical:
            return [[] for _ in texts]
        result = self._client.search(
            self._spec.name,
            data=list(texts),
            anns_field=field,
            limit=limit,
            filter=filter_expression(flt),
            output_fields=[*SCALAR_OUTPUT_FIELDS, LEXICAL_SOURCES[field]],
            search_params={"metric_type": "BM25"},
            timeout=self._timeout,
        )
        # A BM25 score is never negative; Milvus Lite 3.2 hands it back negated.
        return [
            [Hit(h["id"], abs(float(h["distance"])), h["entity"]) for h in hits] for hits in result
        ]

    @reloading
    def hybrid_search(
        self,
        field: VectorField,
        vectors: np.ndarray,
        lexical_field: LexicalField,
        texts: Sequence[str],
        limit: int,
        ranker: HybridRanker,
        flt: SearchFilter | None = None,
    ) -> list[list[Hit]]:
        if not self.lexical:
            return self.search(field, vectors, limit, flt)
        expr = filter_expression(flt)
        lexical = AnnSearchRequest(
            data=list(texts),
            anns_field=lexical_field,
            param={"metric_type": "BM25"},
            limit=limit,
            expr=expr,
        )
        merge = (
            RRFRanker(ranker.k)
            if ranker.kind == "rrf"
            else WeightedRanker(1.0 - ranker.lexical_weight, ranker.lexical_weight)
        )
        result = self._client.hybrid_search(
            self._spec.name,
            [self._dense_request(field, vectors, limit, expr), lexical],
            merge,
            limit=limit,
            output_fields=list(SCALAR_OUTPUT_FIELDS),
            timeout=self._timeout,
        )
        return [[Hit(h["id"], float(h["distance"]), h["entity"]) for h in hits] for hits in result]

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self._get(ids, [*SCALAR_OUTPUT_FIELDS, "deleted", *VECTOR_FIELDS])
        return {r["id"]: r for r in rows if not r["deleted"]}

    @reloading
    def count(self) -> int:
        res = self._client.query(
            self._spec.name,
            filter="deleted == false",
            output_fields=["count(*)"],
            timeout=self._timeout,
        )
        return int(res[0]["count(*)"])
