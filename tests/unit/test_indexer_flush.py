"""When the indexer service flushes: after flush_rows rows, after flush_interval_s, or once it
has gone quiet (nothing in flight, nothing written for flush_quiet_s), never while a batch
is on its way."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from schemas import ProductUpsert
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.indexing.service import IndexerService
from shopvec.kafka.batch import Batch
from shopvec.metrics import IndexerMetrics
from shopvec.store import CollectionSpec, InMemoryProductStore
from tests.unit.kafka_fakes import FakeMessage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class CountingStore(InMemoryProductStore):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class NoImages:
    def load_many(self, images: object) -> list[Exception]:
        return []


def _service(**flush: float) -> tuple[IndexerService, CountingStore]:
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = CountingStore(CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE"))
    indexer = ProductIndexer(enc, store, NoImages(), fusion)
    service = IndexerService(
        indexer=indexer, metrics=IndexerMetrics(), retry=lambda fn: fn(), **flush
    )
    return service, store


def _submit(service: IndexerService, n: int, start: int = 0) -> Batch[object]:
    items = []
    for i in range(start, start + n):
        event = ProductUpsert(id=f"p{i}", version=1, updated_at=T0, title=f"shirt {i}")
        items.append((FakeMessage(i, b"{}"), event))
    batch: Batch[object] = Batch([m for m, _ in items], items)  # type: ignore[arg-type]
    service.submit(batch)  # type: ignore[arg-type]
    assert _ticking(service, lambda: batch.done, tick=False) and batch.error is None
    return batch


def _ticking(service: IndexerService, done, *, tick: bool = True) -> bool:  # type: ignore[no-untyped-def]
    """Waits up to 5 s for done(), calling the service's tick as the consumer loop does."""
    deadline = time.monotonic() + 5.0
    while not done():
        if time.monotonic() > deadline:
            return False
        if tick:
            service.tick()
        time.sleep(0.01)
    return True


def test_a_quiet_indexer_flushes_once() -> None:
    service, store = _service(flush_rows=1000, flush_interval_s=600, flush_quiet_s=0.2)
    try:
        _submit(service, 3)
        service.tick()  # written just now: not quiet yet
        assert store.flushes == 0
        assert _ticking(service, lambda: store.flushes == 1)
        time.sleep(0.3)
        for _ in range(5):
            service.tick()
        time.sleep(0.1)
        assert store.flushes == 1  # nothing written since: nothing to flush
    finally:
        service.close()


def test_a_busy_indexer_flushes_by_rows_only() -> None:
    service, store = _service(flush_rows=5, flush_interval_s=600, flush_quiet_s=60)
    try:
        _submit(service, 3)
        service.tick()
        assert store.flushes == 0
        _submit(service, 3, start=3)
        assert store.flushes == 1  # 6 rows written, 5 or more: flushed after the batch
    finally:
        service.close()
