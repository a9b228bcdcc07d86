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
