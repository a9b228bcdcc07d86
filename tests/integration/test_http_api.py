"""The HTTP API against the real embedded stack: the broker, Milvus Lite, an indexer and a query
worker with the real encoder; searches go out over Kafka on the service's own reply topic."""

from __future__ import annotations

import base64
import fnmatch
import io
import json

import numpy as np
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from PIL import Image

from schemas import SearchReply
from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.http import KafkaBackend, create_app
from shopvec.kafka.config import producer_config
from shopvec.kafka.topics import topic_exists
from shopvec.publish import EventPublisher
from shopvec.runtime import build_indexer_service, build_query_worker
from shopvec.settings import Settings
from tests.integration.conftest import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_searches_products_and_events_over_kafka(settings: Settings, encoder, wait_for) -> None:
    gen = myntra_products(DEMO_CATALOG)
    products = [next(gen) for _ in range(20)]
    shirt = next(p for p in products if "Shirts" in p.category_path)
    photo = base64.b64decode(shirt.images[0].data_base64 or "")
    indexer, metrics = build_indexer_service(settings, encoder)
    query, _ = build_query_worker(settings, encoder)
    EventPublisher(settings).send_all(products, progress=False)
    backend = KafkaBackend(settings)
    exists = topic_exists(Producer(producer_config(settings)))
    with (
        running(indexer.run, indexer.ready),
        running(query.run, query.ready),
        TestClient(create_app(settings, backend), raise_server_exceptions=False) as http,
    ):
        reply_topic = backend.reply_topic
        assert reply_topic is not None and exists(reply_topic)
        assert any(fnmatch.fnmatchcase(reply_topic, p) for p in settings.reply_topic_patterns())
        assert http.get("/readyz").status_code == 200
        wait_for(lambda: metrics.written._value.get() >= 20, 60, "the catalogue")

        # What a shell user types: curl -d, with curl's form content type.
        words = http.post(
            "/v1/search",
            content=json.dumps({"text": shirt.title, "top_k": 5}).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert words.status_code == 200, words.text
        reply = SearchReply.model_validate(words.json())
        assert reply.results[0].product_id == shirt.id
        assert all((r.thumbnail or "").startswith("data:image/jpeg;base64,") for r in reply.results)

        by_photo = http.post(
            "/v1/search/photo",
            files={"photo": ("shirt.jpg", photo, "image/jpeg")},
            data={"query": json.dumps({"top_k": 3, "filters": {"category": "Topwear"}})},
        )
        assert by_photo.status_code == 200, by_photo.text
        assert by_photo.json()["scenario"] == "image2image"
        assert by_photo.json()["results"][0]["product_id"] == shirt.id

        refused = http.post("/v1/search", json={"text": "x", "top_k": 150, "offset": 10})
        assert refused.status_code == 400 and refused.json()["error"]["kind"] == "invalid_request"

        found = http.get(f"/v1/products/{shirt.id}")
        assert found.status_code == 200 and found.json()["title"] == shirt.title
        assert http.get("/v1/products/not-indexed").status_code == 404

        sent = http.post("/v1/events", json={"user_id": "u-1", "product_id": shirt.id})
        assert sent.status_code == 202
    # Closed with the application: its reply topic is gone.
    assert not exists(reply_topic)


def test_no_query_worker_is_a_504_timeout(settings: Settings) -> None:
    quick = settings.model_copy(
        update={"http": settings.http.model_copy(update={"timeout_s": 1.0})}
    )
    backend = KafkaBackend(quick)
    with TestClient(create_app(quick, backend), raise_server_exceptions=False) as http:
        for _ in range(2):
            response = http.post("/v1/search", json={"text": "anything"})
            assert response.status_code == 504
            assert response.json()["error"]["kind"] == "timeout"
        # Nothing is kept for the searches given up on (each one was, for good).
        assert backend._client is not None and backend._client.waiting == 0
        # Larger than the producer's message.max.bytes (librdkafka's 1,000,000 by default):
        # no retry can help, so not "503, try again".
        noise = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, "JPEG", quality=95)
        assert buffer.tell() > 800_000
        big = {"image_base64": base64.b64encode(buffer.getvalue()).decode()}
        response = http.post("/v1/search", json=big)
        assert response.status_code == 413, response.text
        assert backend._client.waiting == 0
        # No products collection yet: not found, not a failure.
        assert http.get("/v1/products/p1").status_code == 404
