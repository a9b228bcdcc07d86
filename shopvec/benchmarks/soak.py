"""A steady load on a running stack for some minutes: each worker's resident memory and open
file descriptors after a warm-up and at the end, and whether any of them restarted."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.product import ProductUpsert
from schemas.user_event import UserEvent
from shopvec.benchmarks.chaos_workload import ChaosPlan
from shopvec.benchmarks.common import percentile
from shopvec.client import SearchClient
from shopvec.kafka.config import producer_config
from shopvec.publish import EventPublisher
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack

__all__ = ["process_usage", "soak"]


def process_usage(pid: int) -> dict[str, float]:
    """Resident memory (MiB) and open file descriptors of one process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


def _usage(stack: EmbeddedStack, workers: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for child in stack.supervised():
        if child.name in workers and child.pid is not None and child.alive():
            out[child.name] = {"pid": child.pid, "restarts": child.restarts}
            out[child.name].update(process_usage(child.pid))
    return out


def _load(
    settings: Settings,
    plan: ChaosPlan,
    client: SearchClient,
    stop: threading.Event,
    sent: dict[str, int],
) -> list[float]:
    """Price changes at 5/s, clicks at 40/s, a search every half second; search latencies."""
    from confluent_kafka import Producer

    products = [e for e in plan.expected.values() if isinstance(e, ProductUpsert)]
    publisher = EventPublisher(settings)
    producer = Producer(producer_config(settings))
    latencies: list[float] = []
    queries = [p.title for p in plan.anchors if p.title]
    started = time.monotonic()
    for tick in itertools.count():
        if stop.wait(max(0.0, started + tick * 0.025 - time.monotonic())):
            break
        now = datetime.now(UTC)
        if tick % 8 == 0:
            p = products[(tick // 8) % len(products)]
            version = 1_000 + tick // 8
            publisher.send(
                p.model_copy(
                    update={"version": version, "updated_at": now, "price": Decimal(tick % 997)}
                )
            )
        anchor = plan.anchors[tick % len(plan.anchors)]
        click = UserEvent(
            event_id=f"soak-{tick}",
            user_id=f"soak-shopper-{tick % 200}",
            product_id=anchor.id,
            type="view",
            timestamp=now,
        )
        producer.produce(
            settings.topics.user_events, key=click.user_id.encode(), value=click.to_bytes()
        )
        producer.poll(0)
        sent["clicks"] += 1
        if tick % 8 == 0:
            sent["product_changes"] += 1
        if tick % 20 == 0:
            asked = time.perf_counter()
            try:
                client.search(queries[tick % len(queries)], top_k=10, timeout_s=30)
                latencies.append((time.perf_counter() - asked) * 1000)
            except Exception:
                latencies.append(float("inf"))
    publisher.flush()
    producer.flush(60)
    return latencies


def soak(
    settings: Settings,
    stack: EmbeddedStack,
    plan: ChaosPlan,
    client: SearchClient,
    minutes: float,
    workers: tuple[str, ...],
) -> dict[str, Any]:
    stop = threading.Event()
    latencies: list[float] = []
    sent = {"clicks": 0, "product_changes": 0}
    thread = threading.Thread(
        target=lambda: latencies.extend(_load(settings, plan, client, stop, sent)), daemon=True
    )
    thread.start()
    seconds = minutes * 60
    warm_up = min(60.0, seconds / 5)
    time.sleep(warm_up)
    start = _usage(stack, workers)
    time.sleep(seconds - warm_up)
    end = _usage(stack, workers)
    stop.set()
    thread.join()
    per_worker: dict[str, Any] = {}
    for name in workers:
        a, b = start.get(name), end.get(name)
        if a is None or b is None:
            per_worker[name] = {"error": "not running at the start or the end"}
            continue
        per_worker[name] = {
            "rss_start_mb": a["rss_mb"],
            "rss_end_mb": b["rss_mb"],
            "rss_growth_pct": round(100 * (b["rss_mb"] - a["rss_mb"]) / a["rss_mb"], 1),
            "fds_start": a["fds"],
            "fds_end": b["fds"],
            "restarted": b["restarts"] != a["restarts"] or b["pid"] != a["pid"],
        }
    growth = [w["rss_growth_pct"] for w in per_worker.values() if "rss_growth_pct" in w]
    answered = [x for x in latencies if x != float("inf")]
    return {
        "minutes": minutes,
        "measured_minutes": round((seconds - warm_up) / 60, 2),
        "workers": per_worker,
        "rss_growth_pct": max(growth) if growth else None,
        "clicks_sent": sent["clicks"],
        "product_changes_sent": sent["product_changes"],
        "searches": len(latencies),
        "search_timeouts": len(latencies) - len(answered),
        "search_p50_ms": round(percentile(answered, 50), 1),
        "search_p99_ms": round(percentile(answered, 99), 1),
    }
