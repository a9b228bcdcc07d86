"""`shopvec bench chaos`: the embedded stack under a catalogue, a click stream and searches,
while every worker is killed with SIGKILL at seeded moments and Milvus Lite once mid-write;
the supervisor starts each again. At the end the collections are compared with what the
events say they must hold (see chaos_check), and `--soak-minutes` adds a steady load that
reports each worker's memory and open files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.search import SearchReply
from schemas.user_event import ForgetUser, UserEvent
from shopvec.benchmarks.chaos_check import (
    Delivered,
    Kill,
    check_products,
    check_reencoding,
    check_users,
    fresh_vectors,
    replay_users,
)
from shopvec.benchmarks.chaos_workload import ChaosPlan, ProductEvent, plan_chaos
from shopvec.benchmarks.common import bench_settings
from shopvec.benchmarks.soak import soak
from shopvec.client import SearchClient
from shopvec.kafka.config import producer_config
from shopvec.publish import EventPublisher
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack, ready
from shopvec.supervise import ChildStatus

__all__ = ["CHAOS_WORKERS", "run_chaos_bench"]

log = logging.getLogger(__name__)

CHAOS_WORKERS = ("indexer", "query", "behaviour")


@dataclass
class _Run:
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


def _paced(items: Sequence[Any], seconds: float, stop: threading.Event) -> Iterator[Any]:
    """items spread evenly over `seconds`."""
    started = time.monotonic()
    for i, item in enumerate(items):
        due = started + seconds * i / max(1, len(items))
        if (wait := due - time.monotonic()) > 0 and stop.wait(wait):
            return
        yield item


# -- load ---------------------------------------------------------------------------------------


def _publish_catalogue(
    run: _Run, events: Sequence[ProductEvent], seconds: float, bursts: int = 10
) -> None:
    """In bursts, so that the indexer often holds a backlog when it is killed."""
    publisher = EventPublisher(run.settings)
    size = -(-len(events) // bursts)
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    for chunk in _paced(chunks, seconds, run.stop):
        for event in chunk:
            publisher.send(event)
        publisher.flush()


def _publish_clicks(run: _Run, events: Sequence[UserEvent | ForgetUser], seconds: float) -> None:
    producer = Producer(producer_config(run.settings))
    topic = run.settings.topics.user_events
    failed: list[str] = []

    def delivered(event: UserEvent | ForgetUser) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))
                return
            with run.lock:
                run.delivered.append(Delivered(event, msg.partition(), msg.offset()))

        return on_delivery

    for event in _paced(events, seconds, run.stop):
        while True:
            try:
                producer.produce(
                    topic,
                    key=event.user_id.encode(),
                    value=event.to_bytes(),
                    on_delivery=delivered(event),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(120)
    if left or failed:
        run.errors.append(f"click events: {left} unsent, {len(failed)} failed {failed[:2]}")


def _search(run: _Run, client: SearchClient, queries: Sequence[str], rate: float) -> None:
    while not run.stop.is_set():
        text = run.rng.choice(queries)
        user = f"shopper-{run.rng.randrange(50)}" if run.rng.random() < 0.5 else None
        sent = run.elapsed()
        future = client.send(client.build_request(text, top_k=10, user_id=user))
        with run.lock:
            run.searches.append((sent, future))
        run.stop.wait(1.0 / rate)


def _search_outcomes(run: _Run, timeout_s: float) -> dict[str, Any]:
    """Replies and their absence. The query worker drops requests older than
    max_request_age_s (their clients have given up), so a request sent while it or Milvus
    was down may go unanswered; any other unanswered request is counted apart."""
    age = run.settings.query.max_request_age_s
    outages = [
        (k.at_s - age, k.back_s)
        for k in [*run.outages, *run.kills]
        if k.worker in ("query", "milvus") and k.back_s is not None
    ]
    deadline = time.monotonic() + timeout_s
    ok = errors = elsewhere = 0
    kinds: dict[str, int] = {}
    for sent, future in run.searches:
        try:
            reply = future.result(max(0.0, deadline - time.monotonic()))
        except Exception:
            errors += 1
            kinds["no_reply"] = kinds.get("no_reply", 0) + 1
            elsewhere += not any(a <= sent <= b for a, b in outages)
            continue
        if reply.error is None:
            ok += 1
        else:
            errors += 1
            elsewhere += not any(a <= sent <= b for a, b in outages)
            kinds[reply.error.kind] = kinds.get(reply.error.kind, 0) + 1
    return {
        "search_ok": ok,
        "search_errors": errors,
        "search_error_kinds": kinds,
        "search_errors_outside_restarts": elsewhere,
    }


# -- faults ---------------------------------------------------------------------------------------


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


def _wait_ready(
    run: _Run, name: str, timeout_s: float = 600, *, not_pid: int | None = None
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


def _killer(run: _Run, worker: str, kills: int, seconds: float) -> None:
    """`kills` SIGKILLs of the worker, each at a seeded moment while it is up and ready (the
    indexer's just after it wrote a batch, when others are in flight)."""
    rng = random.Random(run.rng.random())
    if kills < 1:
        return
    slot = seconds / kills
    for k in range(kills):
        # A moment in the k-th slot of the run; never before the worker is ready again.
        due = run.started + slot * k + rng.uniform(0.2, 0.9) * slot
        child = _wait_ready(run, worker)
        time.sleep(max(0.0, due - time.monotonic()))
        child = _wait_ready(run, worker)
        if worker == "indexer":
            _await_batch(run.stack.home / "logs" / "indexer.log", slot / 2)
            time.sleep(rng.uniform(0.0, 0.5))
        assert child.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        kill = Kill(worker, child.pid, run.elapsed(), _committed(run.settings, worker))
        _wait_ready(run, worker, not_pid=child.pid)
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


def _milvus_restart(run: _Run, at_s: float) -> None:
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


# -- settling and checking ------------------------------------------------------------------------


def _settle(done: Callable[[], bool], timeout_s: float, what: str, errors: list[str]) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout_s:
            errors.append(f"{what} did not settle within {timeout_s:.0f}s")
            break
        time.sleep(2.0)
    return time.monotonic() - started


def _catalogue_settled(store: Any, plan: ChaosPlan) -> bool:
    from schemas.product import ProductDelete

    states = store.state(sorted(plan.expected))
    for pid, event in plan.expected.items():
        state = states.get(pid)
        if isinstance(event, ProductDelete):
            if state is not None and not state.deleted:
                return False
        elif state is None or state.deleted or state.version < event.version:
            return False
    return True


def _quietly(fn: Callable[[], bool]) -> Callable[[], bool]:
    def wrapped() -> bool:
        try:
            return fn()
        except Exception as exc:  # Milvus still coming back, say
            log.info("not settled yet: %s", exc)
            return False

    return wrapped


def run_chaos_bench(
    settings: Settings,
    *,
    products: int = 1000,
    clicks: int = 10_000,
    users: int = 300,
    kills: int = 5,
    seconds: float = 240.0,
    search_rate: float = 2.0,
    seed: int = 7,
    settle_timeout_s: float = 900.0,
    soak_minutes: float = 0.0,
) -> dict[str, Any]:
    from shopvec.behaviour import MilvusUserStore
    from shopvec.runtime import attach_product_store

    plan = plan_chaos(products=products, clicks=clicks, users=users, seed=seed)
    with bench_settings(settings) as s:
        stack = EmbeddedStack(s)
        stack.up(workers=CHAOS_WORKERS)
        run = _Run(s, stack, random.Random(seed))
        result: dict[str, Any] = {
            "seed": seed,
            "product_events": plan.product_events,
            "click_events": len(plan.clicks),
        }
        # The clicks are about anchor products, indexed before any fault.
        EventPublisher(s).send_all(plan.anchors, progress=False)
        store = attach_product_store(s)
        anchors = {p.id for p in plan.anchors}
        _settle(
            _quietly(lambda: len(store.state(sorted(anchors))) == len(anchors)),
            settle_timeout_s,
            "the anchor products",
            run.errors,
        )

        client = SearchClient(s, timeout_s=30)
        queries = [p.title for p in plan.anchors if p.title]
        run.started = time.monotonic()
        load = [
            threading.Thread(target=_publish_catalogue, args=(run, plan.catalogue, seconds)),
            threading.Thread(target=_publish_clicks, args=(run, plan.clicks, seconds)),
        ]
        faults = [
            threading.Thread(target=_killer, args=(run, w, kills, seconds)) for w in CHAOS_WORKERS
        ]
        faults.append(
            threading.Thread(
                target=_milvus_restart, args=(run, run.rng.uniform(0.3, 0.6) * seconds)
            )
        )
        searcher = threading.Thread(target=_search, args=(run, client, queries, search_rate))
        threads = [*load, *faults, searcher]
        for t in threads:
            t.daemon = True
            t.start()
        for t in load + faults:
            t.join()
        result["load_seconds"] = round(run.elapsed(), 1)

        # Every worker up again, then everything the events say must be there.
        for w in CHAOS_WORKERS:
            _wait_ready(run, w)
        result["settle_seconds"] = round(
            _settle(
                _quietly(lambda: _catalogue_settled(store, plan)),
                settle_timeout_s,
                "the products collection",
                run.errors,
            ),
            1,
        )
        users_store = MilvusUserStore(
            store.client, s.milvus.users_collection, store.spec.fused_dim, timeout_s=60
        )
        expected_users = replay_users(s, run.delivered, store)
        _settle(
            _quietly(lambda: check_users(users_store, expected_users)["lost"] == 0),
            settle_timeout_s,
            "the users collection",
            run.errors,
        )
        run.stop.set()
        searcher.join()
        # A request not answered within max_request_age_s is dropped by the worker: no later reply.
        result.update(_search_outcomes(run, s.query.max_request_age_s + 15))

        upserts = [e for e in plan.expected.values() if e.kind == "upsert"]
        fresh = fresh_vectors(s, upserts)
        products_check = check_products(store, plan.expected, fresh)
        users_check = check_users(users_store, expected_users)
        encoding = check_reencoding(stack.home / "logs" / "indexer.log", run.kills)
        per_worker = {w: sum(k.worker == w for k in run.kills) for w in CHAOS_WORKERS}
        downtime = {
            w: [
                round(k.back_s - k.at_s, 1)
                for k in run.kills + run.outages
                if k.worker == w and k.back_s is not None
            ]
            for w in (*CHAOS_WORKERS, "milvus")
        }
        restarts = {c.name: c.restarts for c in stack.supervised()}
        result.update(
            {
                "kills": per_worker,
                "kills_total": len(run.kills),
                "milvus_restarts": run.milvus_restarts,
                "seconds_until_ready_again": downtime,
                "supervisor_restarts": restarts,
                "lost": products_check["lost"] + users_check["lost"],
                "doubled": products_check["doubled"] + users_check["doubled"],
                "mismatched": products_check["mismatched"] + users_check["mismatched"],
                "reencoded_beyond_uncommitted": encoding["reencoded_beyond_uncommitted"],
                "products": products_check,
                "users": users_check,
                "encoding": encoding,
                "errors": run.errors,
            }
        )
        if soak_minutes > 0:
            result["soak"] = soak(run.settings, stack, plan, client, soak_minutes, CHAOS_WORKERS)
        client.close()
        return result
