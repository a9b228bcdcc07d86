"""From a published product event to a search reply, through the real broker and Milvus Lite."""

from __future__ import annotations

import base64
import io
import socket
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from PIL import Image

from schemas import DeadLetter, ProductDelete, ProductImage, ProductUpsert
from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.client import SearchClient
from shopvec.kafka.config import common_config
from shopvec.publish import EventPublisher
from shopvec.runtime import build_indexer_service, build_query_worker
from tests.integration.conftest import running

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sample(n: int) -> list[ProductUpsert]:
    products = myntra_products(DEMO_CATALOG)
    return [next(products) for _ in range(n)]


def read_dead_letters(settings, expected: int, timeout_s: float = 20) -> list[DeadLetter]:
    conf = common_config(settings)
    conf.update({"group.id": f"dlq-{uuid.uuid4().hex}", "enable.auto.commit": False})
    consumer = Consumer(conf)
    # assign, not subscribe: no group join to wait for, and the topic has one partition.
    consumer.assign([TopicPartition(settings.topics.dead_letters, 0, OFFSET_BEGINNING)])
    out: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(DeadLetter.from_bytes(msg.value()))
    finally:
        consumer.close()
    return out


def test_published_product_is_found_then_deleted(settings, encoder, wait_for) -> None:
    products = sample(20)
    target = products[0]  # "Mark Taylor Men Striped Blue Shirt"
    indexer, metrics = build_indexer_service(settings, encoder)
    query, _ = build_query_worker(settings, encoder)
    publisher = EventPublisher(settings)
    with (
        running(indexer.run, indexer.ready),
        running(query.run, query.ready),
        SearchClient(settings, timeout_s=20) as client,
    ):
        published = time.monotonic()
        publisher.send_all(products, progress=False)

        def found_by_text() -> bool:
            reply = client.search(target.title, top_k=3)
            assert reply.error is None, reply.error
            return bool(reply.results) and reply.results[0].product_id == target.id

        wait_for(found_by_text, 30, "the product to be searchable")
        assert time.monotonic() - published < 30

        photo = base64.b64decode(target.images[0].data_base64 or "")
        by_photo = client.search(image=photo, top_k=3)
        assert by_photo.scenario == "image2image"
        assert by_photo.results[0].product_id == target.id
        assert by_photo.results[0].score == pytest.approx(1.0, abs=1e-3)

        publisher.send(ProductDelete(id=target.id, version=2, updated_at=T0))
        publisher.flush()

        def gone() -> bool:
            reply = client.search(target.title, top_k=20)
            return target.id not in [r.product_id for r in reply.results]

        wait_for(gone, 30, "the deleted product to disappear")
        # Metrics are counted once offsets are stored, a moment after the write is searchable.
        wait_for(lambda: metrics.written._value.get() >= 21, 10, "the delete to be counted")


def test_bad_input_is_dead_lettered_and_the_worker_carries_on(settings, encoder, wait_for) -> None:
    good = sample(2)
    broken_photo = ProductUpsert(
        id="broken-photo",
        version=1,
        updated_at=T0,
        title="a photo that is not one",
        images=[ProductImage(data_base64=base64.b64encode(b"not an image").decode())],
    )
    hostile = ProductUpsert(
        id="hostile-url",
        version=1,
        updated_at=T0,
        title="a local file",
        images=[ProductImage(url="file:///etc/passwd")],
    )
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, "PNG")  # 100 MP in a few kilobytes
    too_large = ProductUpsert(
        id="too-large",
        version=1,
        updated_at=T0,
        title="decompression bomb",
        images=[ProductImage(data_base64=base64.b64encode(bomb.getvalue()).decode())],
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = ProductUpsert(
        id="unreachable",
        version=1,
        updated_at=T0,
        title="nobody serves this",
        images=[ProductImage(url=f"http://127.0.0.1:{closed_port}/photo.jpg")],
    )
    # Loopback allowed here only so that a refused connection can be shown; the default
    # refuses it as forbidden, which the unit tests of the fetcher show.
    settings = settings.model_copy(
        update={"images": settings.images.model_copy(update={"allow_private_networks": True})}
    )
    indexer, metrics = build_indexer_service(settings, encoder)
    publisher = EventPublisher(settings)
    with running(indexer.run, indexer.ready):
        publisher.send_raw(b"k1", b"{this is not json")
        publisher.send_raw(b"k2", b'{"kind": "upsert", "id": "x"}')
        for bad in (broken_photo, hostile, too_large, unreachable):
            publisher.send(bad)
        publisher.send_all(good, progress=False)
        dead = read_dead_letters(settings, 6)
        wait_for(lambda: metrics.written._value.get() >= 2, 30, "the good products")
        assert indexer.ready.is_set()
    kinds = sorted(d.error_kind for d in dead)
    assert kinds == [
        "forbidden_url",
        "image_too_large",
        "image_undecodable",
        "image_unreachable",
        "not_json",
        "schema_violation",
    ]
    for d in dead:
        assert d.topic == settings.topics.products and d.offset >= 0 and d.error_message
    assert next(d for d in dead if d.error_kind == "not_json").value == b"{this is not json"
