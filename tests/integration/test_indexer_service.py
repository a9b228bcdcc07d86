"""The indexer as a service: kill -9 at random moments, several indexers in one group."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas import ProductDelete, ProductUpsert
from shopvec.benchmarks.ingest import STAGES
from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.indexing.pipeline import IndexOutcome
from shopvec.publish import EventPublisher
from shopvec.runtime import build_fusion, build_indexer_service, build_store, collection_spec
from shopvec.settings import OpsSettings, Settings
from shopvec.stack import free_port, worker_environment
from shopvec.store import MilvusProductStore
from tests.integration.conftest import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def worker_env(settings: Settings, ops_port: int) -> dict[str, str]:
    worker = settings.model_copy(
        update={
            "indexer": settings.indexer.model_copy(update={"batch_size": 8, "batch_wait_ms": 50}),
            "ops": OpsSettings(host="127.0.0.1", port=ops_port),
        }
    )
    return worker_environment(worker)


def start_indexer(settings: Settings) -> tuple[subprocess.Popen, int]:
    """The indexer as its own process, the way an orchestrator runs it (and kills it)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.indexer"],
        env=worker_env(settings, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(shopvec_indexer_\w+_total)(?:\{[^}]*\})? ([0-9.e+]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def wait_ready(port: int, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the indexer exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("indexer not ready")


def catalogue_with_changes(n: int) -> tuple[list, dict[str, int]]:
    """n products at v1; price-only v2 for a third; new titles v3 for a sixth; a sixth deleted."""
    gen = myntra_products(DEMO_CATALOG)
    base = [next(gen) for _ in range(n)]
    events: list[ProductUpsert | ProductDelete] = list(base)
    expected = {p.id: 1 for p in base}
    for p in base[: n // 3]:
        events.append(p.model_copy(update={"version": 2, "price": Decimal("10.5")}))
        expected[p.id] = 2
    for p in base[n // 3 : n // 3 + n // 6]:
        upd = {"version": 3, "title": p.title + " (new season)", "updated_at": T0 + timedelta(1)}
        events.append(p.model_copy(update=upd))
        expected[p.id] = 3
    for p in base[-(n // 6) :]:
        events.append(ProductDelete(id=p.id, version=5, updated_at=T0 + timedelta(2)))
        del expected[p.id]
    return events, expected


def product_store(settings: Settings, encoder) -> MilvusProductStore:
    fusion = build_fusion(settings, encoder)
    return build_store(settings, collection_spec(settings, encoder, fusion))


def live_versions(store: MilvusProductStore) -> dict[str, int]:
    rows = store.client.query(
        store.collection, filter="deleted == false", output_fields=["id", "version"], limit=16384
    )
    return {r["id"]: r["version"] for r in rows}


def test_kill_9_at_random_moments_loses_and_doubles_nothing(settings, encoder, wait_for) -> None:
    events, expected = catalogue_with_changes(60)
    store = product_store(settings, encoder)
    EventPublisher(settings).send_all(events, progress=False)
    rng = random.Random(7)
    encoded_texts = 0.0
    kills = 0
    for _ in range(3):
        proc, port = start_indexer(settings)
        try:
            wait_ready(port, proc)
            time.sleep(rng.uniform(0.5, 3.0))
            encoded_texts += scrape(port).get("shopvec_indexer_encoded_texts_total", 0)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
    proc, port = start_indexer(settings)
    try:
        wait_ready(port, proc)
        wait_for(lambda: live_versions(store) == expected, 120, "the exact catalogue")
        final = scrape(port)
        encoded_texts += final.get("shopvec_indexer_encoded_texts_total", 0)
    finally:
        proc.terminate()
        proc.wait(30)
    assert live_versions(store) == expected
    # Every text needs encoding once (60, plus 10 new titles). What a kill can cost is the
    # batches in flight that were not yet committed: at most max_in_flight + 1 batches of 8.
    assert encoded_texts <= 70 + kills * 4 * 8, encoded_texts


def test_two_indexers_share_the_partitions(settings, encoder, wait_for) -> None:
    store = product_store(settings, encoder)
    outcomes: list[IndexOutcome] = []
    first, m1 = build_indexer_service(settings, encoder, on_batch=outcomes.append)
    second, m2 = build_indexer_service(settings, encoder, on_batch=outcomes.append)
    gen = myntra_products(DEMO_CATALOG)
    products = [next(gen) for _ in range(40)]
    with running(first.run, first.ready), running(second.run, second.ready):
        wait_for(
            lambda: first.assigned_partitions() and second.assigned_partitions(),
            30,
            "both indexers to hold a partition",
        )
        assert set(first.assigned_partitions()).isdisjoint(second.assigned_partitions())
        EventPublisher(settings).send_all(products, progress=False)
        wait_for(
            lambda: m1.written._value.get() + m2.written._value.get() >= 40, 60, "all products"
        )
    assert m1.events_in._value.get() > 0 and m2.events_in._value.get() > 0
    assert len(live_versions(store)) == 40
    # Each written batch says when it reached each stage, in order.
    assert outcomes
    for outcome in outcomes:
        marks = [outcome.stages[stage] for _, stage in STAGES[:-1]]
        assert marks == sorted(marks)
