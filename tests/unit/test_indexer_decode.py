"""What the indexer makes of a record before anything is written: a tombstone's key and an
event's key are product ids, the event's own."""

from __future__ import annotations

import json

import pytest

from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.indexing.service import IndexerService, Tombstone
from shopvec.kafka.batch import Reject
from shopvec.metrics import IndexerMetrics
from shopvec.store import CollectionSpec, InMemoryProductStore
from tests.unit.kafka_fakes import FakeMessage

BODY = {"kind": "upsert", "id": "B", "version": 1, "updated_at": "2026-01-01T00:00:00Z"}


@pytest.fixture
def service() -> IndexerService:
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    spec = CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    indexer = ProductIndexer(enc, InMemoryProductStore(spec), None, fusion)  # type: ignore[arg-type]
    return IndexerService(indexer=indexer, metrics=IndexerMetrics(), retry=lambda f: f())


def _upsert(key: bytes | None) -> FakeMessage:
    return FakeMessage(0, json.dumps({**BODY, "title": "shirt"}).encode(), key=key)


@pytest.mark.parametrize(
    "key",
    [
        b"zz'] or id not in ['",
        b'zz"] or id not in ["',
        b"a/b",
        b"\xff\xfe",
        "商".encode() * 43,
    ],
)
def test_a_tombstone_keyed_by_no_product_id_is_refused(service, key: bytes) -> None:
    with pytest.raises(Reject) as info:
        service.decode(FakeMessage(0, None, key=key))
    assert info.value.kind == "schema_violation"
    assert "is not a product id" in info.value.reason


def test_a_tombstone_names_its_product(service) -> None:
    assert service.decode(FakeMessage(0, None, key="商品:1".encode())) == Tombstone("商品:1")


def test_an_event_keyed_by_another_id_is_refused(service) -> None:
    with pytest.raises(Reject) as info:
        service.decode(_upsert(b"A\x1b[2J"))
    assert info.value.kind == "schema_violation"
    assert info.value.reason == "the record's key 'A' is not its product's id 'B'"


@pytest.mark.parametrize("key", [b"B", None])
def test_an_event_keyed_by_its_id_or_unkeyed_is_read(service, key: bytes | None) -> None:
    assert service.decode(_upsert(key)).id == "B"
