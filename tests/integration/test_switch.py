"""A change of fusion builds a new collection from the topic and switches to it while a
stream of searches keeps getting answers."""

from __future__ import annotations

import threading

import pytest

from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.client import SearchClient, SearchTimeout
from shopvec.indexing.reindex import reindex
from shopvec.publish import EventPublisher
from shopvec.runtime import (
    build_fusion,
    build_indexer_service,
    build_query_worker,
    build_store,
    collection_spec,
)
from tests.integration.conftest import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fusion_switch_keeps_answering(settings, encoder, wait_for) -> None:
    gen = myntra_products(DEMO_CATALOG)
    products = [next(gen) for _ in range(24)]
    # Taste vectors live in the fused space, so a new fusion has its users elsewhere too.
    new = settings.model_copy(
        update={
            "encoder": settings.encoder.model_copy(update={"fusion": "concat"}),
            "milvus": settings.milvus.model_copy(
                update={"users_collection": settings.milvus.users_collection + "_concat"}
            ),
        }
    )
    old_store = build_store(
        settings, collection_spec(settings, encoder, build_fusion(settings, encoder))
    )
    new_store = build_store(new, collection_spec(new, encoder, build_fusion(new, encoder)))
    assert old_store.collection != new_store.collection

    indexer, metrics = build_indexer_service(settings, encoder)
    old_query, _ = build_query_worker(settings, encoder)
    new_query, new_metrics = build_query_worker(new, encoder)
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream(client: SearchClient) -> None:
        while not stop.is_set():
            try:
                reply = client.search(products[3].title, top_k=3, timeout_s=20)
            except SearchTimeout as exc:
                failures.append(str(exc))
                continue
            if reply.error is not None or not reply.results:
                failures.append(str(reply.error or "no results"))
            else:
                answers.append(reply.results[0].product_id)

    EventPublisher(settings).send_all(products, progress=False)
    with running(indexer.run, indexer.ready), SearchClient(settings, timeout_s=20) as client:
        wait_for(lambda: metrics.written._value.get() >= 24, 60, "the first collection")
        assert old_store.alias_target() == old_store.collection
        searcher = threading.Thread(target=stream, args=(client,), daemon=True)
        old_stop = threading.Event()
        old_thread = threading.Thread(target=old_query.run, args=(old_stop,), daemon=True)
        old_thread.start()
        assert old_query.ready.wait(30)
        searcher.start()
        wait_for(lambda: len(answers) >= 3, 30, "searches on the old collection")
        summary = reindex(new, encoder=encoder, progress=False, idle_s=2.0)
        assert summary["live_products"] == 24
        assert new_store.alias_target() == new_store.collection
        with running(new_query.run, new_query.ready):
            # The old worker leaves; the new one takes over its partitions and answers.
            old_stop.set()
            old_thread.join(30)
            assert not old_thread.is_alive(), "the old query worker did not stop"
            before = len(answers)
            # A failed search ends the wait at once, so that the reason is the one reported.
            wait_for(lambda: len(answers) >= before + 3 or failures, 60, "answers after the switch")
            assert failures == []
            stop.set()
            searcher.join(30)
    assert failures == []
    assert set(answers) == {products[3].id}
    served = new_metrics.registry.get_sample_value(
        "shopvec_query_requests_total", {"scenario": "text2product"}
    )
    assert served and served > 0
