"""A second, independent Kafka client: aiokafka (pure Python, its own protocol code, no
librdkafka) publishes a product and runs a search using only what the README and the JSON Schema
files document: topic names, the key, the headers and the bodies. None of shopvec's producer,
client or pydantic models is used on the client's side.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shopvec.runtime import build_indexer_service, build_query_worker
from tests.integration.conftest import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

aiokafka = pytest.importorskip("aiokafka")
jsonschema = pytest.importorskip("jsonschema")

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _validator(name: str) -> Any:
    """A Draft 2020-12 validator whose "pattern" reads Unicode classes (\\p{L}), as the
    validators of ECMAScript, Java and Go do; Python's re does not know them."""
    regex = pytest.importorskip("regex")

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not regex.search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    base = jsonschema.Draft202012Validator
    cls = jsonschema.validators.extend(base, {"pattern": pattern})
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return cls(schema, format_checker=base.FORMAT_CHECKER)


def _photo() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 128), (180, 20, 40)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _product(product_id: str) -> dict[str, Any]:
    event = {
        "kind": "upsert",
        "id": product_id,
        "version": 1,
        "updated_at": datetime.now(UTC).isoformat(),
        "title": "Crimson velvet evening gown with lace sleeves",
        "description": "A long crimson velvet gown for evening parties.",
        "category_path": ["Apparel", "Dress", "Dresses"],
        "brand": "Aurelia",
        "price": 4999.0,
        "currency": "INR",
        "in_stock": True,
        "attributes": {"colour": "Red", "fabric": "velvet"},
        "images": [{"data_base64": _photo(), "role": "main"}],
        "locale": "en",
    }
    _validator("product-event").validate(event)
    return event


def _headers(**extra: str) -> list[tuple[str, bytes]]:
    common = {"content-type": "application/json", "schema-version": "1", **extra}
    return [(name, value.encode()) for name, value in common.items()]


async def _publish_and_search(settings: Any, product: dict[str, Any], wait_indexed: Any) -> Any:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = settings.kafka_bootstrap()
    # Not aiokafka's idempotent producer: the embedded broker answers its InitProducerId with
    # UNKNOWN_SERVER_ERROR (-1) and no record is ever sent. A plain producer with acks=all.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.products,
            json.dumps(product).encode(),
            key=product["id"].encode(),
            headers=_headers(),
        )
        await asyncio.to_thread(wait_indexed)

        # A reply topic of the client's own, inside the pattern replies may go to.
        reply_topic = f"shopvec.search.replies.aiokafka-{uuid.uuid4().hex[:8]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(reply_topic, 1, 1)])
        finally:
            await admin.close()

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partition = TopicPartition(reply_topic, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)

            request_id = f"aiokafka-{uuid.uuid4().hex}"
            request = {"request_id": request_id, "text": "crimson velvet gown", "top_k": 3}
            _validator("search-request").validate(request)
            # The reply topic is named by the header only: the body leaves reply_topic out.
            await producer.send_and_wait(
                settings.topics.search_requests,
                json.dumps(request).encode(),
                key=request_id.encode(),
                headers=_headers(**{"correlation-id": request_id, "reply-topic": reply_topic}),
            )
            async with asyncio.timeout(60):
                async for record in consumer:
                    headers = {name: value.decode() for name, value in record.headers}
                    if headers.get("correlation-id") == request_id:
                        return record, headers
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


def test_aiokafka_publishes_a_product_and_searches_by_the_documented_contract(
    settings, encoder, wait_for
) -> None:
    settings = settings.model_copy(
        update={
            "query": settings.query.model_copy(
                update={"reply_topic_patterns": ["shopvec.search.replies.*"]}
            )
        }
    )
    product_id = f"aiokafka-{uuid.uuid4().hex[:8]}"
    product = _product(product_id)
    indexer, metrics = build_indexer_service(settings, encoder)
    query, _ = build_query_worker(settings, encoder)

    def indexed() -> None:
        wait_for(lambda: metrics.written._value.get() >= 1, 60, "the product indexed")

    with running(indexer.run, indexer.ready), running(query.run, query.ready):
        record, headers = asyncio.run(_publish_and_search(settings, product, indexed))

    reply = json.loads(record.value)
    _validator("search-reply").validate(reply)
    assert record.key == headers["correlation-id"].encode()
    assert headers["content-type"] == "application/json"
    assert reply["request_id"] == headers["correlation-id"]
    assert reply.get("error") is None
    assert reply["results"][0]["product_id"] == product_id
    assert reply["results"][0]["title"] == product["title"]
