"""From `shopvec reindex` to the new model's indexers, nothing is lost: the events the old
model's indexers take after the reindex ends reach the new collection once its indexers run.
And a record refused unread (oversize) does not keep the reindex from catching up."""

from __future__ import annotations

import pytest

from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.indexing.reindex import reindex
from shopvec.publish import EventPublisher
from shopvec.runtime import build_fusion, build_indexer_service, build_store, collection_spec
from tests.integration.conftest import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_events_between_reindex_and_rollout_reach_the_new_collection(
    settings, encoder, wait_for
) -> None:
    gen = myntra_products(DEMO_CATALOG)
    # One product (and an oversize record in its partition) before the reindex: the other
    # partitions are empty while it runs, and the collection holds nothing of them.
    first = [next(gen) for _ in range(1)]
    later = [next(gen) for _ in range(11)]
    new = settings.model_copy(
        update={"encoder": settings.encoder.model_copy(update={"fusion": "concat"})}
    )
    old_store = build_store(
        settings, collection_spec(settings, encoder, build_fusion(settings, encoder))
    )
    new_store = build_store(new, collection_spec(new, encoder, build_fusion(new, encoder)))

    old_indexer, old_metrics = build_indexer_service(settings, encoder)
    EventPublisher(settings).send_all(first, progress=False)
    large = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"extra": {"message.max.bytes": "8000000"}})
        }
    )
    oversize = settings.indexer.max_event_bytes + 1024
    # Keyed as the product: the same partition, so that the others stay empty.
    EventPublisher(large).send_raw(first[0].id.encode(), b'{"blob": "' + b"x" * oversize + b'"}')
    with running(old_indexer.run, old_indexer.ready):
        wait_for(lambda: old_metrics.written._value.get() >= 1, 60, "the old collection")
        summary = reindex(new, encoder=encoder, progress=False, idle_s=2.0)
        assert summary["switched"] and summary["live_products"] == 1
        # Changes that only the old model's indexers see: they commit them for the group the
        # new model's indexers will join.
        EventPublisher(settings).send_all(later, progress=False)
        wait_for(lambda: old_metrics.written._value.get() >= 12, 60, "the later changes")
    assert old_store.count() == 12
    assert new_store.count() == 1

    new_indexer, new_metrics = build_indexer_service(new, encoder)
    with running(new_indexer.run, new_indexer.ready):
        wait_for(lambda: new_store.count() == 12, 60, "the later changes in the new collection")
    # Started where the reindex ended: what it wrote was not read again.
    assert new_metrics.events_in._value.get() == 11
