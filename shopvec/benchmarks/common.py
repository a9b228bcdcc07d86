"""What the benchmarks share: a private stack when none is configured, a synthetic catalogue
built from the real sample photos and titles, and percentiles."""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from schemas.product import ProductUpsert
from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.kafka.admin import ensure_topics
from shopvec.settings import Settings, StackSettings, TopicSettings
from shopvec.stack import EmbeddedStack, free_port

__all__ = [
    "bench_settings",
    "catalogue",
    "cpu_seconds",
    "iter_catalogue",
    "peak_rss_mb",
    "percentile",
    "thread_cpu_seconds",
]


@contextmanager
def bench_settings(settings: Settings, partitions: int = 4) -> Iterator[Settings]:
    """Fresh topics and collection; a private embedded stack when Kafka or Milvus is not
    configured, stopped afterwards."""
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="shopvec-bench-") as home:
        s = settings.model_copy(
            update={
                "stack": StackSettings(
                    home=Path(home), kafka_port=free_port(), milvus_port=free_port()
                ),
                "topics": TopicSettings(
                    products=f"bench-products-{tag}",
                    search_requests=f"bench-requests-{tag}",
                    search_replies=f"bench-replies-{tag}",
                    dead_letters=f"bench-dead-{tag}",
                    user_events=f"bench-users-{tag}",
                    partitions={"products": partitions, "search_requests": partitions},
                ),
                "milvus": settings.milvus.model_copy(update={"collection": f"bench_{tag}"}),
                "kafka": settings.kafka.model_copy(update={"session_timeout_ms": 6000}),
            }
        )
        stack = EmbeddedStack(s)
        if s.kafka_embedded or s.milvus_embedded:
            stack.up(workers=[])
        try:
            ensure_topics(s)
            yield s
        finally:
            stack.down()


def iter_catalogue(
    n: int, *, prefix: str = "bench", now: datetime | None = None
) -> Iterator[ProductUpsert]:
    """n distinct products cycling through the sample's real photos and titles."""
    base = list(myntra_products(DEMO_CATALOG))
    stamp = now or datetime.now(UTC)
    for i in range(n):
        yield base[i % len(base)].model_copy(update={"id": f"{prefix}-{i}", "updated_at": stamp})


def catalogue(n: int, *, prefix: str = "bench", now: datetime | None = None) -> list[ProductUpsert]:
    return list(iter_catalogue(n, prefix=prefix, now=now))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (0 once it is gone)."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Each live thread of this process: its native id -> (name, CPU seconds so far). Python
    threads go by their Python name; the others (librdkafka's, gRPC's) by the kernel's."""
    named = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out = {}
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            name = named.get(tid) or (task / "comm").read_text().strip()
        except OSError:
            continue
        out[tid] = (name, _stat_cpu_seconds(task / "stat"))
    return out


def _stat_cpu_seconds(stat: Path) -> float:
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
