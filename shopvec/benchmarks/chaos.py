"""`shopvec bench chaos`: the embedded stack under a catalogue, a click stream and searches,
while every worker is killed with SIGKILL at seeded moments and Milvus Lite once mid-write;
the supervisor starts each again. At the end the collections are compared with what the
events say they must hold (see chaos_check), and `--soak-minutes` adds a steady load that
reports each worker's memory and open files.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from confluent_kafka import Producer

from schemas.user_event import ForgetUser, UserEvent
from shopvec.benchmarks.chaos_check import (
    Delivered,
    check_products,
    check_reencoding,
    check_users,
    fresh_vectors,
    replay_users,
)
from shopvec.benchmarks.chaos_faults import ChaosRun, kill_milvus_once, kill_worker, wait_ready
from shopvec.benchmarks.chaos_workload import ChaosPlan, ProductEvent, plan_chaos
from shopvec.benchmarks.common import bench_settings
from shopvec.benchmarks.soak import soak
from shopvec.client import SearchClient
from shopvec.kafka.config import producer_config
from shopvec.publish import EventPublisher
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack

__all__ = ["CHAOS_WORKERS", "run_chaos_bench"]

log = logging.getLogger(__name__)

CHAOS_WORKERS = ("indexer", "query", "behaviour")


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
    run: ChaosRun, events: Sequence[ProductEvent], seconds: float, bursts: int = 10
) -> None:
    """In bursts, so that the indexer often holds a backlog when it is killed."""
    publisher = EventPublisher(run.settings)
    size = -(-len(events) // bursts)
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    for chunk in _paced(chunks, seconds, run.stop):
        for event in chunk:
            publisher.send(event)
        publisher.flush()


def _publish_clicks(
    run: ChaosRun, events: Sequence[UserEvent | ForgetUser], seconds: float
) -> None:
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


def _search(run: ChaosRun, client: SearchClient, queries: Sequence[str], rate: float) -> None:
    while not run.stop.is_set():
        text = run.rng.choice(queries)
        user = f"shopper-{run.rng.randrange(50)}" if run.rng.random() < 0.5 else None
        sent = run.elapsed()
        future = client.send(client.build_request(text, top_k=10, user_id=user))
        with run.lock:
            run.searches.append((sent, future))
        run.stop.wait(1.0 / rate)


def _search_outcomes(run: ChaosRun, timeout_s: float) -> dict[str, Any]:
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
        run = ChaosRun(s, stack, random.Random(seed))
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
            threading.Thread(target=kill_worker, args=(run, w, kills, seconds))
            for w in CHAOS_WORKERS
        ]
        faults.append(
            threading.Thread(
                target=kill_milvus_once, args=(run, run.rng.uniform(0.3, 0.6) * seconds)
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
            wait_ready(run, w)
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
