"""The HTTP benchmark's figures: overheads from samples pooled over runs, and each run's."""

from __future__ import annotations

import math

from shopvec.benchmarks.http import _Samples


def test_runs_pool_their_samples_and_list_their_own_overheads() -> None:
    samples = _Samples()
    # Two runs of 100 requests a side: HTTP 2 ms slower at every request in the first, 4 ms
    # in the second; a failed request (nan) is left out.
    samples.add(
        [(0.010 + i / 1e5 + 0.002, 5.0) for i in range(100)] + [(math.nan, math.nan)],
        [(0.010 + i / 1e5, 5.0) for i in range(100)],
    )
    samples.add(
        [(0.010 + i / 1e5 + 0.004, 5.0) for i in range(100)],
        [(0.010 + i / 1e5, 5.0) for i in range(100)],
    )
    samples.failures["http"] = 1
    figures = samples.figures()
    assert figures["p50_overhead_ms_each_run"] == [2.0, 4.0]
    assert figures["p50_overhead_ms_median_run"] == 3.0
    assert figures["http_answered"] == figures["kafka_answered"] == 200
    assert figures["http_failed"] == 1
    assert 2.0 <= figures["p99_overhead_ms"] <= 4.0


def test_one_run_has_no_list_of_runs() -> None:
    samples = _Samples()
    samples.add([(0.012, 5.0)] * 10, [(0.010, 5.0)] * 10)
    figures = samples.figures()
    assert figures["p99_overhead_ms"] == 2.0
    assert "p99_overhead_ms_each_run" not in figures
