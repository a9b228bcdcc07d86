"""When the indexer service flushes: after flush_rows rows, after flush_interval_s, or once it
has gone quiet (nothing in flight, nothing written for flush_quiet_s), never while a batch
is on its way; and that batches its encoder threads finish out of order are written in
order."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import torch

from schemas import ProductUpsert
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.indexing.service import IndexerService
from shopvec.kafka.batch import Batch
from shopvec.metrics import IndexerMetrics
from shopvec.runtime import share_encoder_threads
from shopvec.settings import Settings
from shopvec.store import CollectionSpec, InMemoryProductStore
from tests.unit.kafka_fakes import FakeMessage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class CountingStore(InMemoryProductStore):
    flushes = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upserted: list[list[tuple[str, int]]] = []

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        self.upserted.append([(r["id"], r["version"]) for r in rows])
        super().upsert(rows)


class SlowOnCue(HashingEncoder):
    """Holds a batch whose titles say "slow" until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if any("slow" in t for t in texts):
            assert self.go.wait(5)
        return super().encode_texts(texts)


class NoImages:
    def load_many(self, images: object) -> list[Exception]:
        return []


def _service(
    encoder: HashingEncoder | None = None, encode_threads: int = 1, **flush: float
) -> tuple[IndexerService, CountingStore]:
    enc = encoder or HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = CountingStore(CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE"))
    indexer = ProductIndexer(enc, store, NoImages(), fusion)
    service = IndexerService(
        indexer=indexer,
        metrics=IndexerMetrics(),
        retry=lambda fn: fn(),
        encode_threads=encode_threads,
        **flush,
    )
    return service, store


def _batch(n: int, start: int = 0, *, version: int = 1, title: str = "shirt") -> Batch[object]:
    items = []
    for i in range(start, start + n):
        event = ProductUpsert(id=f"p{i}", version=version, updated_at=T0, title=f"{title} {i}")
        items.append((FakeMessage(i, b"{}"), event))
    return Batch([m for m, _ in items], items)  # type: ignore[arg-type]


def _submit(service: IndexerService, n: int, start: int = 0) -> Batch[object]:
    batch = _batch(n, start)
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


def test_batches_encoded_side_by_side_are_written_in_the_order_they_came() -> None:
    """The second batch, a newer version of the first's products, is encoded first; written
    first, the older version would then overwrite it."""
    encoder = SlowOnCue()
    service, store = _service(encoder, encode_threads=2, flush_rows=1000, flush_quiet_s=60)
    try:
        first, second = _batch(3, title="slow"), _batch(3, version=2)
        service.submit(first)  # type: ignore[arg-type]
        service.submit(second)  # type: ignore[arg-type]
        time.sleep(0.2)  # the second is encoded by now, and must wait for the first
        assert store.upserted == [] and not second.done
        encoder.go.set()
        assert _ticking(service, lambda: second.done, tick=False)
        assert first.done and first.error is None and second.error is None
        assert store.upserted == [
            [(f"p{i}", 1) for i in range(3)],
            [(f"p{i}", 2) for i in range(3)],
        ]
        assert {s.version for s in store.state([f"p{i}" for i in range(3)]).values()} == {2}
    finally:
        service.close()


def test_every_encoder_thread_stops_and_the_writer_after_them() -> None:
    service, _ = _service(encode_threads=3, flush_rows=1000, flush_quiet_s=60)
    _submit(service, 2)
    service.close()
    assert not any(t.is_alive() for t in service._threads)
    assert len(service._threads) == 4


class OneAtATime(HashingEncoder):
    """An encoder that may not encode on two threads at once (a tokenizer that is not
    re-entrant, as the CLIP family's)."""

    def __init__(self) -> None:
        super().__init__()
        del self.concurrent_images


@pytest.mark.parametrize(
    ("encoder", "cores", "threads", "torch_threads"),
    [(HashingEncoder(), 4, 2, 2), (HashingEncoder(), 2, 2, 1), (OneAtATime(), 4, 1, None)],
)
def test_encoder_threads_share_the_torch_threads_where_the_encoder_allows(
    encoder: HashingEncoder, cores: int, threads: int, torch_threads: int | None
) -> None:
    settings = Settings.model_validate(
        {"indexer": {"encode_threads": 2}, "encoder": {"threads": cores}}
    )
    before = torch.get_num_threads()
    try:
        assert share_encoder_threads(settings, encoder) == threads
        assert torch.get_num_threads() == (torch_threads or before)
    finally:
        torch.set_num_threads(before)
