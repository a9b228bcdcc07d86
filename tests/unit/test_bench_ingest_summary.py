"""`shopvec bench ingest --repeat` and `--memory-backlogs`, `bench query --aged-events`: the
arguments and the summaries, without a broker."""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import pytest

from shopvec.benchmarks.cli import add_bench_commands
from shopvec.benchmarks.common import thread_cpu_seconds
from shopvec.benchmarks.ingest import (
    run_ingest_repeated,
    summarise_memory,
    summarise_runs,
    thread_roles,
)
from shopvec.benchmarks.query import aged_ratios
from shopvec.settings import Settings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def _run(ratio: float, p99: float, bound: float = 1.3) -> dict[str, Any]:
    return {
        "products_per_s": 40.0,
        "ratio_to_raw_encoder": ratio,
        "freshness_p99_s": p99,
        "freshness_bound_s": bound,
        "peak_rss_mb": 900.0,
    }


def test_ingest_arguments_default_to_one_run_and_no_backlogs() -> None:
    args = _parse("ingest")
    assert args.repeat == 1
    assert args.memory_backlogs is None
    args = _parse("ingest", "--repeat", "5", "--memory-backlogs", "1000", "20000", "--json")
    assert args.repeat == 5
    assert args.memory_backlogs == [1000, 20000]
    assert args.json


@pytest.mark.parametrize("bad", ["0", "-2", "x"])
def test_ingest_refuses_a_count_below_one(bad: str) -> None:
    with pytest.raises(SystemExit):
        _parse("ingest", "--repeat", bad)


def test_ingest_with_a_single_backlog_size_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("ingest", "--memory-backlogs", "1000")
    assert args.func(Settings(), args) == 2
    assert "two or more" in capsys.readouterr().err


def test_query_aged_events_defaults_to_none() -> None:
    assert _parse("query").aged_events == 0
    assert _parse("query", "--aged-events", "10000").aged_events == 10000


def test_query_kinds_default_to_words_and_photos() -> None:
    assert _parse("query").kinds == ["text", "image"]
    assert _parse("query", "--kinds", "text2image").kinds == ["text2image"]
    with pytest.raises(SystemExit):
        _parse("query", "--kinds", "video")


def test_summary_takes_the_lowest_ratio_and_the_worst_p99_against_its_bound() -> None:
    runs = [_run(0.93, 1.2), _run(0.88, 1.1), _run(0.95, 1.5, bound=1.6), _run(0.91, 1.4)]
    summary = summarise_runs(runs)
    assert summary["min_ratio_to_raw_encoder"] == 0.88
    # 1.4 against 1.3 is further over its bound than 1.5 against 1.6.
    assert summary["max_freshness_p99_s"] == 1.4
    assert summary["max_freshness_p99_bound_s"] == 1.3
    assert summary["runs"] == 4
    assert summary["runs_meeting_targets"] == 2
    assert summary["all_met"] is False


def test_summary_is_met_only_when_every_run_meets_both_targets() -> None:
    assert summarise_runs([_run(0.9, 1.3), _run(0.95, 1.0)])["all_met"] is True
    assert summarise_runs([_run(0.95, 1.0), _run(0.95, 1.31)])["all_met"] is False
    with pytest.raises(ValueError):
        summarise_runs([])


def test_one_run_keeps_its_keys_and_more_runs_add_runs_and_summary() -> None:
    figures = iter([_run(0.92, 1.0), _run(0.89, 1.2), _run(0.95, 1.1)])
    calls: list[dict[str, Any]] = []

    def fake(settings: Settings, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return next(figures)

    one = run_ingest_repeated(Settings(), repeat=1, run=fake, products=10)
    assert one == _run(0.92, 1.0)
    many = run_ingest_repeated(Settings(), repeat=2, run=fake, products=10)
    assert set(many) == {"runs", "summary"}
    assert many["runs"] == [_run(0.89, 1.2), _run(0.95, 1.1)]
    assert many["summary"]["min_ratio_to_raw_encoder"] == 0.89
    assert calls == [{"products": 10}] * 3
    with pytest.raises(ValueError):
        run_ingest_repeated(Settings(), repeat=0, run=fake)


def test_memory_summary_reports_growth_from_the_smallest_backlog() -> None:
    out = summarise_memory(
        {20000: {"peak_rss_mb": 990.0, "products_per_s": 300.0}, 1000: {"peak_rss_mb": 900.0}}
    )
    assert list(out["backlogs"]) == ["1000", "20000"]
    assert out["backlogs"]["1000"] == {"peak_rss_mb": 900.0}
    assert out["peak_rss_growth_pct"] == 10.0
    assert out["within_target"] is True
    grown = summarise_memory({1000: {"peak_rss_mb": 900.0}, 20000: {"peak_rss_mb": 991.0}})
    assert grown["within_target"] is False


def test_aged_ratios_compare_the_kafka_sides() -> None:
    fresh = {"p50_ms": 10.0, "p99_ms": 20.0}
    aged = {"p50_ms": 12.0, "p99_ms": 30.0}
    assert aged_ratios(fresh, aged) == {"aged_p50_ms_ratio": 1.2, "aged_p99_ms_ratio": 1.5}


def test_broker_topic_config_is_key_value_pairs() -> None:
    assert _parse("broker").topic_config == []
    args = _parse("broker", "--topic-config", "retention.ms=1000", "segment.ms=500")
    assert dict(args.topic_config) == {"retention.ms": "1000", "segment.ms": "500"}
    with pytest.raises(SystemExit):
        _parse("broker", "--topic-config", "retention.ms")


def test_aged_ingest_is_compared_with_the_fresh_run() -> None:
    from shopvec.benchmarks.ingest import compare_aged

    assert _parse("ingest").aged_events == 0
    out = compare_aged(_run(0.95, 1.0) | {"products_per_s": 40.0}, _run(0.9, 1.1))
    assert out["aged_products_per_s_ratio"] == 1.0
    assert out["aged_freshness_p99_ratio"] == 1.1
    assert out["aged_within_20pct"] is True
    slow = compare_aged(_run(0.95, 1.0), _run(0.9, 1.0) | {"products_per_s": 30.0})
    assert slow["aged_within_20pct"] is False


def test_freshness_trace_splits_the_slowest_events_by_stage() -> None:
    from shopvec.benchmarks.ingest import freshness_trace

    def marks(start: float, encode_s: float) -> dict[str, float]:
        t = start + 0.2
        out = {"assembled": t, "prepared": t + 0.01, "encode_start": t + 0.01}
        out["encoded"] = out["encode_start"] + encode_s
        out["write_start"] = out["encoded"]
        out["written"] = out["write_start"] + 0.05
        out["recorded"] = out["written"]
        return out

    traced = [(float(i), marks(float(i), 0.3)) for i in range(10)]
    traced.append((100.0, marks(100.0, 2.0)))  # one slow encode
    figures = freshness_trace(traced)
    slowest = figures["freshness_slowest_ms"]
    assert len(slowest) == 3
    assert slowest[0]["encode"] == 2000.0
    assert slowest[0]["freshness_ms"] == 2260.0
    assert figures["freshness_stages_p50_ms"]["to_batch"] == 200.0
    assert figures["freshness_stages_p50_ms"]["encode"] == 300.0
    assert freshness_trace([]) == {}


def test_thread_cpu_is_read_per_thread_and_summed_by_role() -> None:
    spun, done = threading.Event(), threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        spun.set()
        done.wait()

    before = thread_cpu_seconds()
    worker = threading.Thread(target=spin, name="indexer-encode-3")
    idle = threading.Thread(target=done.wait, name="indexer-write")
    worker.start()
    idle.start()
    spun.wait()
    after = thread_cpu_seconds()  # read while they live: a thread gone is not listed
    done.set()
    worker.join()
    idle.join()
    assert after[worker.native_id][0] == "indexer-encode-3"
    assert after[worker.native_id][1] >= 0.25
    roles = thread_roles(before, after)
    assert roles["encode"] >= 0.25
    assert roles["write"] < 0.1

    named = {
        1: ("indexer-encode-0", 5.0),
        2: ("indexer-encode-1", 4.0),
        3: ("indexer-consume", 1.5),
        4: ("indexer-write", 0.5),
        5: ("rdk:broker1", 0.25),
        6: ("MainThread", 0.25),
    }
    assert thread_roles({1: ("indexer-encode-0", 1.0), 3: ("indexer-consume", 0.5)}, named) == {
        "encode": 8.0,
        "consume": 1.0,
        "write": 0.5,
        "other": 0.5,
    }
