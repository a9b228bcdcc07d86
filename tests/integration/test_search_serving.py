"""Serving searches: many in flight from several clients, sync and asyncio, none crossed."""

from __future__ import annotations

import asyncio
import base64
import random

import pytest

from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.client import AsyncSearchClient, SearchClient
from shopvec.publish import EventPublisher
from shopvec.runtime import build_indexer_service, build_query_worker
from tests.integration.conftest import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_200_concurrent_requests_reach_the_client_that_asked(settings, encoder, wait_for) -> None:
    gen = myntra_products(DEMO_CATALOG)
    products = [next(gen) for _ in range(30)]
    indexer, metrics = build_indexer_service(settings, encoder)
    first, _ = build_query_worker(settings, encoder)
    second, _ = build_query_worker(settings, encoder)
    EventPublisher(settings).send_all(products, progress=False)
    rng = random.Random(3)
    with (
        running(indexer.run, indexer.ready),
        running(first.run, first.ready),
        running(second.run, second.ready),
    ):
        wait_for(lambda: metrics.written._value.get() >= 30, 60, "the catalogue")
        clients = [SearchClient(settings, timeout_s=60) for _ in range(3)]
        try:
            sent = []
            for i in range(150):
                client = clients[i % 3]
                product = rng.choice(products)
                request = client.build_request(product.title, top_k=3)
                sent.append((client, request, client.send(request)))

            async def from_asyncio() -> list[tuple[str, str, str]]:
                async with AsyncSearchClient(settings, timeout_s=60) as aclient:
                    picks = [rng.choice(products) for _ in range(50)]
                    requests = [aclient.build_request(p.title) for p in picks]
                    replies = await asyncio.gather(*(aclient.request(r) for r in requests))
                    return [
                        (r.request_id, reply.request_id, reply.results[0].title)
                        for r, reply in zip(requests, replies, strict=True)
                    ]

            async_results = asyncio.run(from_asyncio())
            for _client, request, future in sent:
                reply = future.result(60)
                assert reply.request_id == request.request_id
                assert reply.error is None
                assert reply.results[0].title == request.text
            for asked, answered, _ in async_results:
                assert asked == answered
            assert len(sent) + len(async_results) == 200
        finally:
            for client in clients:
                client.close()


def test_every_scenario_with_filters_over_kafka(settings, encoder, wait_for, tmp_path) -> None:
    from shopvec.present import write_html

    gen = myntra_products(DEMO_CATALOG)
    products = [next(gen) for _ in range(40)]
    shirts = [p for p in products if "Shirts" in p.category_path]
    assert shirts, "the sample's first products include shirts"
    shirt = shirts[0]
    indexer, metrics = build_indexer_service(settings, encoder)
    query, _ = build_query_worker(settings, encoder)
    EventPublisher(settings).send_all(products, progress=False)
    photo = base64.b64decode(shirt.images[0].data_base64 or "")
    with (
        running(indexer.run, indexer.ready),
        running(query.run, query.ready),
        SearchClient(settings, timeout_s=30) as client,
    ):
        wait_for(lambda: metrics.written._value.get() >= 40, 60, "the catalogue")

        words = client.search(shirt.title, filters={"category": "Shirts"}, top_k=5)
        assert words.scenario == "text2product" and words.results[0].product_id == shirt.id
        assert all("Shirts" in r.category_path for r in words.results)

        by_photo = client.search(image=photo, filters={"category": "Topwear"}, top_k=5)
        assert by_photo.scenario == "image2image" and by_photo.results[0].product_id == shirt.id
        assert all("Topwear" in r.category_path for r in by_photo.results)

        photos_only = client.search("shirt", scenario="text2image", top_k=5)
        assert photos_only.scenario == "text2image" and photos_only.results

        both = client.search("striped shirt", image=photo, top_k=5, ranker="rrf", explain=True)
        assert both.scenario == "cross" and both.results[0].product_id == shirt.id
        assert both.results[0].explanation["combined"]["ranker"] == "rrf"

        alike = client.search(like_product_id=shirt.id, top_k=5)
        assert alike.scenario == "more_like_this"
        assert shirt.id not in [r.product_id for r in alike.results]

        page2 = client.search("shirt", top_k=3, offset=3)
        assert [r.rank for r in page2.results] == [4, 5, 6]

        bad = client.search("x", top_k=150, offset=10)
        assert bad.error is not None and bad.error.kind == "invalid_request"

    page = tmp_path / "results.html"
    write_html(by_photo, page, query="photo")
    assert page.read_text().count("<img") == len(by_photo.results)


def test_malformed_requests_get_an_error_reply_or_a_dead_letter(settings, encoder) -> None:
    from confluent_kafka import Producer

    from schemas import SearchReply
    from schemas.wire import HEADER_REPLY_TOPIC
    from shopvec.kafka.config import producer_config
    from tests.integration.test_end_to_end import read_dead_letters

    query, _ = build_query_worker(settings, encoder)
    with running(query.run, query.ready), SearchClient(settings, timeout_s=20) as client:
        producer = Producer(producer_config(settings))
        answer = client.expect("bad-1")
        # Names its reply topic and an id, but asks for nothing: an error reply.
        producer.produce(
            settings.topics.search_requests,
            value=b'{"request_id": "bad-1", "top_k": 5}',
            headers=[(HEADER_REPLY_TOPIC, client.reply_topic.encode())],
        )
        # Not even JSON, and nowhere to answer: a dead letter.
        producer.produce(settings.topics.search_requests, value=b"{oops")
        producer.flush(10)
        reply: SearchReply = answer.result(20)
        assert reply.error is not None and reply.error.kind == "invalid_request"
        dead = read_dead_letters(settings, 1)
    assert [d.error_kind for d in dead] == ["not_json"]
