"""`shopvec bench broker` against the real broker, at a size a test can afford."""

from __future__ import annotations

from shopvec.benchmarks.broker import run_broker_bench
from shopvec.settings import Settings


def test_round_trips_at_each_count_of_batches(settings: Settings) -> None:
    result = run_broker_bench(settings, batches=(20, 0), probes=5)

    assert result["fetch_wait_max_ms"] == settings.fetch_wait_ms()
    assert list(result["batches"]) == ["0", "20"]
    for figures in result["batches"].values():
        assert 0 < figures["round_trip_p50_ms"] <= figures["round_trip_p99_ms"] < 10_000


def test_depths_of_the_request_and_reply_partitions(settings: Settings) -> None:
    from shopvec.benchmarks.broker import age_topic
    from shopvec.cli import crowded_partitions
    from shopvec.client import SearchClient
    from shopvec.kafka.admin import request_reply_depths

    age_topic(settings, settings.topics.search_requests, 12)
    with SearchClient(settings) as client:
        depths = request_reply_depths(settings)
        requests = {
            k: v for k, v in depths.items() if k.startswith(settings.topics.search_requests + "[")
        }
        assert sum(requests.values()) == 12
        assert len(requests) == settings.topics.partitions["search_requests"]
        assert depths[f"{client.reply_topic}[0]"] == 0
    assert crowded_partitions(settings) == []
