"""No message and no client can stop a worker or make it write where it must not: against the
real broker and Milvus Lite, with the real encoder."""

from __future__ import annotations

import base64
import io
import json
import resource
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from PIL import Image

from schemas.dead_letter import DeadLetter
from schemas.product import ProductImage, ProductUpsert
from schemas.wire import HEADER_CORRELATION_ID, HEADER_REPLY_TOPIC
from shopvec.client import SearchClient
from shopvec.indexing.reindex import topic_size
from shopvec.kafka.config import admin_config, common_config
from shopvec.kafka.generations import generation_topic
from shopvec.publish import EventPublisher
from shopvec.runtime import build_indexer_service, build_query_worker
from tests.integration.conftest import running
from tests.integration.test_end_to_end import read_dead_letters, sample
from tests.integration.test_indexer_service import live_versions, product_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MB = 1024 * 1024


def _large_client(settings):
    """Settings whose clients send and take messages up to 10 MB, as a careless catalogue
    system's would."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"extra": {"message.max.bytes": str(10 * MB)}}
            )
        }
    )


def _oversize_event(size: int) -> bytes:
    body = {
        "kind": "upsert",
        "id": f"big-{size}",
        "version": 1,
        "updated_at": "2026-01-01T00:00:00Z",
        "title": "runaway",
        "attributes": {"blob": "x" * size},
    }
    return json.dumps(body).encode()


def test_oversize_and_hostile_events_never_stop_the_indexer(settings, encoder, wait_for) -> None:
    settings = _large_client(settings)
    before, after = sample(4)[:2], sample(4)[2:]
    indexer, metrics = build_indexer_service(settings, encoder)
    publisher = EventPublisher(settings)
    long_description = json.dumps(
        {
            "kind": "upsert",
            "id": "long-description",
            "version": 1,
            "updated_at": "2026-01-01T00:00:00Z",
            "description": "d" * int(0.9 * MB),
        }
    ).encode()
    with running(indexer.run, indexer.ready):
        publisher.send_all(before, progress=False)
        publisher.send_raw(b"big", _oversize_event(5 * MB))  # refused at the door
        publisher.send_raw(b"long", long_description)  # 0.9 MB, fails the contract
        publisher.send_raw(b"junk", b"\x00\xff" * 1000)
        publisher.send_raw(b"nested", b"[" * 100_000)
        publisher.send_raw(
            b"slash",
            json.dumps({**json.loads(_oversize_event(10)), "id": "../etc/passwd"}).encode(),
        )
        publisher.send_raw(None, None)  # a tombstone without a key
        publisher.send_all(after, progress=False)
        dead = read_dead_letters(settings, 6, timeout_s=60)
        wait_for(lambda: metrics.written._value.get() >= 4, 60, "the good products around them")
        assert indexer.ready.is_set() and indexer.health.ready()
    by_key = {d.key_base64: d for d in dead if d.key_base64}
    assert len(dead) == 6, [d.error_kind for d in dead]
    assert all(len(d.to_bytes()) <= settings.kafka.dead_letter_max_bytes for d in dead)
    oversize = next(d for d in dead if d.error_kind == "oversize")
    assert oversize.value_size is not None and oversize.value_size > 5 * MB
    assert oversize.value_truncated and oversize.value_sha256
    long = by_key[DeadLetter.encode(b"long") or ""]
    assert long.error_kind == "schema_violation" and long.value_truncated
    assert long.value_size == len(long_description)


def _pixel_limit_photo(settings) -> ProductImage:
    """A photo of exactly the pixel limit that takes a few kilobytes: lossless WebP of one
    colour."""
    width = 8000
    out = io.BytesIO()
    Image.new("RGB", (width, settings.images.max_pixels // width), (200, 30, 40)).save(
        out, "WEBP", lossless=True
    )
    return ProductImage(data_base64=base64.b64encode(out.getvalue()).decode())


def test_a_product_of_photos_at_the_pixel_limit_is_indexed_in_bounded_memory(
    settings, encoder, wait_for
) -> None:
    # 16 photos of 40 million pixels each in an event of under 100 KB: 1.9 GB decoded, and
    # four times that as float, held at once unless each photo is shrunk as it is decoded.
    photos = [_pixel_limit_photo(settings)] * 16
    product = ProductUpsert(id="huge-photos", version=1, updated_at=T0, title="red", images=photos)
    assert len(product.model_dump_json()) < 100_000
    indexer, metrics = build_indexer_service(settings, encoder)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with running(indexer.run, indexer.ready):
        EventPublisher(settings).send_all([product], progress=False)
        wait_for(lambda: metrics.written._value.get() >= 1, 120, "the product of huge photos")
        assert indexer.ready.is_set()
    grown_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
    assert grown_mb < 1024, f"peak RSS grew by {grown_mb:.0f} MB"


def test_a_backlog_of_products_of_sixteen_photos_is_indexed_in_bounded_memory(
    settings, encoder, wait_for
) -> None:
    # A catalogue whose products carry the most photos an event may (16), each larger than
    # the side photos are shrunk to. Counted as one product each, a batch of 32 held 512
    # decoded photos and these three batches grew the process by 2.9 GB (4.5 GB with photos
    # of a megapixel); weighed by their photos, batches hold 32 whatever the products carry.
    photos = []
    for k in range(16):
        out = io.BytesIO()
        Image.new("RGB", (768, 768), (15 * k, 30, 40)).save(out, "WEBP", lossless=True)
        photos.append(ProductImage(data_base64=base64.b64encode(out.getvalue()).decode()))
    products = [
        ProductUpsert(id=f"many-{i}", version=1, updated_at=T0, title="red shirt", images=photos)
        for i in range(96)
    ]
    indexer, metrics = build_indexer_service(settings, encoder)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with running(indexer.run, indexer.ready):
        EventPublisher(settings).send_all(products, progress=False)
        wait_for(lambda: metrics.written._value.get() >= 96, 300, "the products of 16 photos")
        assert indexer.ready.is_set()
    grown_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
    assert grown_mb < 1536, f"peak RSS grew by {grown_mb:.0f} MB"


def test_a_dead_letter_the_broker_will_not_take_is_sent_without_the_original(
    settings, encoder
) -> None:
    # The workers' producers take at most 200 kB here, less than a dead letter may be.
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={
                    "extra": {"message.max.bytes": "200000"},
                    "dead_letter_max_bytes": 512 * 1024,
                }
            )
        }
    )
    indexer, _ = build_indexer_service(settings, encoder)
    bad = b"{" + b"q" * 400_000
    publisher = EventPublisher(
        settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"extra": {}})})
    )
    with running(indexer.run, indexer.ready):
        publisher.send_raw(b"bad", bad)
        publisher.send_all(sample(1), progress=False)
        (dead,) = read_dead_letters(settings, 1, timeout_s=60)
    assert dead.error_kind == "not_json" and dead.value_base64 is None
    assert dead.value_truncated and dead.value_size == len(bad)


def test_a_client_cannot_make_the_query_worker_write_into_other_topics(settings, encoder) -> None:
    query, _ = build_query_worker(settings, encoder)
    admin = AdminClient(admin_config(settings))
    missing = f"nobody-made-this-{uuid.uuid4().hex[:8]}"
    missing_reply = f"{settings.topics.search_replies}.{uuid.uuid4().hex[:8]}"
    targets = [settings.topics.products, settings.topics.dead_letters, missing, missing_reply]
    topics_before = set(admin.list_topics(timeout=10).topics)
    ends_before = {t: topic_size(settings, t) for t in targets[:2]}
    producer = Producer(common_config(settings))
    with running(query.run, query.ready):
        for i, target in enumerate(targets):
            body = {"request_id": f"evil-{i}", "text": "shirt", "reply_topic": target}
            producer.produce(settings.topics.search_requests, value=json.dumps(body).encode())
        # The same through the header alone.
        producer.produce(
            settings.topics.search_requests,
            value=json.dumps({"request_id": "evil-header", "text": "shirt"}).encode(),
            headers=[(HEADER_REPLY_TOPIC, settings.topics.products.encode())],
        )
        producer.flush(10)
        dead = read_dead_letters(settings, len(targets) + 1, timeout_s=60)
        # A client that plays by the rules is still answered, under its correlation id.
        with SearchClient(settings) as client:
            future = client.expect("by-header")
            producer.produce(
                settings.topics.search_requests,
                value=json.dumps({"text": "shirt", "reply_topic": client.reply_topic}).encode(),
                headers=[(HEADER_CORRELATION_ID, b"by-header")],
            )
            producer.flush(10)
            reply = future.result(30)
        assert query.health.ready()
    assert reply.request_id == "by-header" and reply.error is None
    assert sorted(d.error_kind for d in dead) == ["forbidden_reply_topic"] * (len(targets) + 1)
    time.sleep(1)
    topics_after = set(admin.list_topics(timeout=10).topics)
    assert missing not in topics_after and missing_reply not in topics_after
    # Besides the client's reply topic, only the requests topic's standby generation, which
    # the worker makes itself (shopvec.kafka.generations).
    standby = generation_topic(settings.topics.search_requests, 1)
    assert topics_after - topics_before <= {client.reply_topic, standby}
    # Only the dead letters reached the dead-letter topic; nothing reached the catalogue.
    assert topic_size(settings, settings.topics.products) == ends_before[settings.topics.products]


def test_filters_of_any_characters_find_their_products_and_hostile_ones_are_refused(
    settings, encoder, wait_for
) -> None:
    awkward = 'Br"and\\\x01\tco'
    odd = ProductUpsert(
        id="awkward-1",
        version=1,
        updated_at=T0,
        title="odd thing",
        brand=awkward,
        category_path=["Apparel", awkward],
        attributes={awkward: awkward},
    )
    indexer, metrics = build_indexer_service(settings, encoder)
    query, _ = build_query_worker(settings, encoder)
    EventPublisher(settings).send_all([*sample(2), odd], progress=False)
    producer = Producer(common_config(settings))
    with (
        running(indexer.run, indexer.ready),
        running(query.run, query.ready),
        SearchClient(settings, timeout_s=30) as client,
    ):
        wait_for(lambda: metrics.written._value.get() >= 3, 60, "the catalogue")
        for filters in (
            {"brand": awkward},
            {"category": awkward},
            {"attributes": {awkward: awkward}},
        ):
            reply = client.search("odd thing", filters=filters, top_k=5)
            assert reply.error is None, (filters, reply.error)
            assert [r.product_id for r in reply.results] == ["awkward-1"], filters
        # Bodies only a hand-made producer sends: numbers JSON does not have, and more
        # attribute clauses than a search may take (20,000 of them kept a worker busy 10 s).
        many = json.dumps({f"k{i}": i for i in range(20_000)})
        hostile = {
            "infinite": '{"price_min": Infinity}',
            "nan": '{"attributes": {"size": NaN}}',
            "many": '{"attributes": ' + many + "}",
        }
        futures = {}
        for name, filters in hostile.items():
            futures[name] = client.expect(name)
            body = f'{{"request_id": "{name}", "text": "shirt", "filters": {filters}}}'
            producer.produce(
                settings.topics.search_requests,
                value=body.encode(),
                headers=[(HEADER_REPLY_TOPIC, client.reply_topic.encode())],
            )
        producer.flush(10)
        for name, future in futures.items():
            error = future.result(30).error
            assert error is not None and error.kind == "invalid_request", (name, error)
        assert client.search("shirt", top_k=3).results
        assert query.health.ready()


def test_keys_that_are_not_their_products_ids_touch_no_other_product(
    settings, encoder, wait_for
) -> None:
    """A tombstone's key becomes a term of Milvus's delete, and a record's key decides where
    its product's events are ordered and compacted: a key that is no product id, or another
    product's, is dead-lettered and the catalogue stays as it was."""
    products = sample(3)
    indexer, metrics = build_indexer_service(settings, encoder)
    store = product_store(settings, encoder)
    publisher = EventPublisher(settings)
    hostile = {
        b"zz'] or id not in ['": None,  # pymilvus's `ids=` took it into its filter as it was
        b'zz"] or id not in ["': None,
        b"not its id": products[0].model_copy(update={"id": "elsewhere"}).to_bytes(),
    }
    with running(indexer.run, indexer.ready):
        publisher.send_all(products[:2], progress=False)
        wait_for(lambda: metrics.written._value.get() >= 2, 60, "the first products")
        for key, value in hostile.items():
            publisher.send_raw(key, value)
        publisher.send_all(products[2:], progress=False)
        dead = read_dead_letters(settings, len(hostile), timeout_s=60)
        wait_for(lambda: metrics.written._value.get() >= 3, 60, "the product after them")
        assert indexer.health.ready()
    assert sorted(d.error_kind for d in dead) == ["schema_violation"] * len(hostile)
    assert any("is not its product's id 'elsewhere'" in d.error_message for d in dead)
    assert sorted(live_versions(store)) == sorted(p.id for p in products)
    # The store quotes keys itself: one with quotes deletes and finds nothing else.
    store.delete(["zz'] or id not in ['", 'zz"] or id not in ["'])
    assert store.get(["x' or id != '"]) == {}
    assert sorted(live_versions(store)) == sorted(p.id for p in products)
