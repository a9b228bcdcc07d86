"""Serving searches: many in flight from several clients, sync and asyncio, none crossed."""

from __future__ import annotations

import asyncio
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
