"""The chaos benchmark's faults: what one run shares between its threads, and the threads that
kill each worker with SIGKILL at seeded moments and Milvus Lite once, recording when each was
killed, the worker group's committed offsets right then, and when a new process answered."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from schemas.search import SearchReply
from shopvec.benchmarks.chaos_check import Delivered, Kill
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack, ready
from shopvec.supervise import ChildStatus

__all__ = ["ChaosRun", "kill_milvus_once", "kill_worker", "wait_ready"]

log = logging.getLogger(__name__)


@dataclass
class ChaosRun:
    """What the threads of one run share."""

    settings: Settings
    stack: EmbeddedStack
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    kills: list[Kill] = field(default_factory=list)
    outages: list[Kill] = field(default_factory=list)
    """Milvus restarts: what every worker waits out."""
    milvus_restarts: int = 0
    delivered: list[Delivered] = field(default_factory=list)
    searches: list[tuple[float, Future[SearchReply]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def child(self, name: str) -> ChildStatus | None:
        return next((c for c in self.stack.supervised() if c.name == name), None)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _ready(child: ChildStatus | None) -> bool:
    return child is not None and child.alive() and ready(child.port)


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


_TOPIC_OF = {"indexer": "products", "behaviour": "user_events", "query": "search_requests"}


def _committed(settings: Settings, worker: str) -> dict[int, int]:
    group = getattr(settings, worker).group_id
    topic = getattr(settings.topics, _TOPIC_OF[worker])
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap(),
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def wait_ready(
    run: ChaosRun, name: str, timeout_s: float = 600, *, not_pid: int | None = None
) -> ChildStatus:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child = run.child(name)
        if child is not None and child.pid != not_pid and _ready(child):
            return child
        time.sleep(0.25)
    raise TimeoutError(f"{name} not ready again within {timeout_s:.0f}s")


def _await_batch(log_file: Path, timeout_s: float) -> None:
    """Until the indexer logs its next written batch: it is busy, with more in flight."""
    deadline = time.monotonic() + timeout_s
    with open(log_file, "rb") as f:
        f.seek(0, os.SEEK_END)
        while time.monotonic() < deadline:
            line = f.readline()
            if not line:
                time.sleep(0.05)
            elif b"batch written" in line:
                return


def kill_worker(run: ChaosRun, worker: str, kills: int, seconds: float) -> None:
    """`kills` SIGKILLs of the worker, each at a seeded moment while it is up and ready (the
    indexer's just after it wrote a batch, when others are in flight)."""
    rng = random.Random(run.rng.random())
    if kills < 1:
        return
    slot = seconds / kills
    for k in range(kills):
        # A moment in the k-th slot of the run; never before the worker is ready again.
        due = run.started + slot * k + rng.uniform(0.2, 0.9) * slot
        child = wait_ready(run, worker)
        time.sleep(max(0.0, due - time.monotonic()))
        child = wait_ready(run, worker)
        if worker == "indexer":
            _await_batch(run.stack.home / "logs" / "indexer.log", slot / 2)
            time.sleep(rng.uniform(0.0, 0.5))
        assert child.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        kill = Kill(worker, child.pid, run.elapsed(), _committed(run.settings, worker))
        wait_ready(run, worker, not_pid=child.pid)
        kill.back_s = run.elapsed()
        with run.lock:
            run.kills.append(kill)
        log.info(
            "killed %s (pid %s) at %.1fs, ready again at %.1fs",
            worker,
            child.pid,
            kill.at_s,
            kill.back_s,
        )


def kill_milvus_once(run: ChaosRun, at_s: float) -> None:
    if run.stop.wait(max(0.0, at_s - run.elapsed())):
        return
    child = run.child("milvus")
    if child is None or child.pid is None or not child.alive():
        run.errors.append("Milvus Lite was not running at its kill")
        return
    os.kill(child.pid, signal.SIGKILL)
    kill = Kill("milvus", child.pid, run.elapsed())
    while not run.stop.is_set():
        now = run.child("milvus")
        if now and now.pid != kill.pid and now.alive() and now.port and _answers(now.port):
            break
        time.sleep(0.1)
    kill.back_s = run.elapsed()
    run.milvus_restarts += 1
    run.outages.append(kill)
    log.info("killed Milvus Lite at %.1fs, answering again at %.1fs", kill.at_s, kill.back_s)
