"""`shopvec bench query`: search latency from client send to reply over Kafka, against the same
search done in-process in the same run, at a steady request rate; and ANN recall@10 against
exact search.

The query worker runs as its own process, as deployed, and the client sends from this one.
Two in-process references, both with the worker's SearchService, here:
- in-process serving at the same rate: requests arrive at the same steady pace into a local
  queue that one thread serves the way the query worker does (it takes what has arrived, up to
  a batch, and answers it with one search_many). Kafka's overhead is the difference between
  this and the same requests over Kafka: the transport, not the queueing that any server of
  that capacity would show at that rate;
- the search alone: one at a time, nothing in front of it, what a single search costs.

Searches are measured once the store has built its indexes: after a flush, Milvus builds them
in the background (Milvus Lite reports them built at once, so for the embedded one the
benchmark waits until its process goes idle), and a search meanwhile scans the rows instead.

The collection is filled directly (not through the encoder, which would take hours at 100k on a
CPU): the sample's real products are encoded once, and each stored row is one of them plus a
little Gaussian jitter, so the vectors have the sample's structure at the size asked for.
Queries are real: the sample's titles and photos, through the real encoder.

Each measurement (a size and a kind of query) has a request topic and a query worker of its
own, and each of its rounds a client with a new reply topic. The embedded broker (Tansu, memory
storage) gets slower with every record batch a partition holds (`shopvec bench broker`), and a
request or a reply at this rate is a batch of one; the broker keeps no retention and refuses to
delete records. On long-lived topics each request would pay for the batches before it (the 100k
run for the whole 10k one, the last round for the 49 before it), which says how long the broker
has run, not what Kafka adds: a Kafka broker finds an offset through its index, whatever the
partition holds.

`--aged-events N` adds, for each size and kind, the same Kafka requests against a stack that
has already carried N searches: a request topic whose partitions hold N single-record batches
(the query worker's group committed past them, as a worker that has run that long would be),
sent by one client for the whole measurement. Reported beside the fresh side's figures, with
the ratio of each percentile. On the embedded broker the query worker finds the topic full and
moves requests to a new generation of it (shopvec.kafka.generations), as a stack that has run
that long has done by then. The reply topic is the client's own and starts empty. On the embedded
broker a fetch shorter than the time it takes to reach the end of a long partition returns
nothing, so from about 20,000 batches a partition the request/reply path's 2 ms fetches get no
records at all (docs/benchmarks.md, "The embedded broker"); a shared reply topic that already
held 5,000 batches was where that was first seen.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from schemas.search import SearchRequest
from shopvec.benchmarks.broker import age_topic
from shopvec.benchmarks.common import bench_settings, catalogue, cpu_seconds, percentile
from shopvec.client import SearchClient
from shopvec.encoders.base import Encoder, l2_normalise
from shopvec.imaging import ImageLoader
from shopvec.indexing.pipeline import ProductIndexer
from shopvec.kafka.admin import delete_topics, ensure_topics
from shopvec.kafka.generations import request_generations
from shopvec.runtime import (
    build_encoder,
    build_fusion,
    build_search_service,
    build_store,
    collection_spec,
)
from shopvec.search.service import SearchService
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack
from shopvec.store.base import VECTOR_FIELDS
from shopvec.store.memory import InMemoryProductStore
from shopvec.store.milvus import MilvusProductStore
from shopvec.threads import limit_blas_threads

__all__ = ["aged_ratios", "run_query_bench"]

_JITTER = 0.2
"""Norm of the noise added to a seed vector (unit length) to make a distinct stored row."""


def _jitter(v: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=-1, keepdims=True)
    return l2_normalise(v + scale * noise)


def _seed_rows(encoder: Encoder, settings: Settings, sample: int) -> list[dict[str, Any]]:
    """The sample encoded through the real pipeline, kept in memory."""
    fusion = build_fusion(settings, encoder)
    spec = collection_spec(settings, encoder, fusion)
    memory = InMemoryProductStore(spec)
    ProductIndexer(encoder, memory, ImageLoader(settings.images), fusion).apply(
        catalogue(sample, prefix="seed")
    )
    return list(memory.rows.values())


def _fill(
    store: MilvusProductStore, seeds: list[dict[str, Any]], n: int, rng: np.random.Generator
) -> np.ndarray:
    fused = np.empty((n, store.spec.fused_dim), np.float32)
    for start in range(0, n, 2000):
        rows = []
        for i in range(start, min(n, start + 2000)):
            seed = seeds[i % len(seeds)]
            row = dict(seed, id=f"p{i}", doc=dict(seed["doc"]))
            row["doc"].pop("thumbnail", None)
            for f in VECTOR_FIELDS:
                v = np.asarray(seed[f], np.float32)
                row[f] = _jitter(v, _JITTER, rng)
            fused[i] = row["fused_vec"]
            rows.append(row)
        store.upsert(rows)
    store.flush()
    return fused


def _wait_until_indexed(
    store: MilvusProductStore, settings: Settings, timeout_s: float = 900.0
) -> float:
    """Waits until the store's indexes cover its rows; returns the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout_s
    if settings.milvus_embedded:
        milvus = next(p for p in EmbeddedStack(settings).processes() if p.name == "milvus")
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:
            before = cpu_seconds(milvus.pid)
            time.sleep(1.0)
            quiet = quiet + 1 if cpu_seconds(milvus.pid) - before < 0.05 else 0
    else:
        for field in VECTOR_FIELDS:
            while time.monotonic() < deadline:
                info = store.client.describe_index(store.collection, field)
                if not info or int(info.get("pending_index_rows", 0)) == 0:
                    break
                time.sleep(1.0)
    return time.monotonic() - started


class _InProcessServer:
    """The query worker's loop without Kafka: a local queue served by one thread that takes
    what has arrived (up to batch_size, waiting batch_wait_s after the first, as the worker
    does) and answers it with one search_many."""

    def __init__(self, service: SearchService, batch_size: int, batch_wait_s: float) -> None:
        self._service = service
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._queue: queue.Queue[tuple[SearchRequest, Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def ask(self, request: SearchRequest) -> Any:
        done: Future[Any] = Future()
        self._queue.put((request, done))
        return done.result(timeout=120)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _serve(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            until = time.monotonic() + self._batch_wait_s
            while len(batch) < self._batch_size:
                try:
                    more = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            replies = self._service.search_many([r for r, _ in batch])
            for (_, done), reply in zip(batch, replies, strict=True):
                done.set_result(reply)


Timed = tuple[float, float]
"""A request's latency in seconds as its sender saw it, and the took_ms its reply reports."""


def _sequential(rate: float, ids: range, send: Callable[[int], Timed]) -> list[Timed]:
    """One search at a time at the same pace (the next one starts at its slot, or as soon as
    the previous one ends if that is later): the search's own latency, nothing in front of it."""
    out = []
    t0 = time.monotonic()
    for k, i in enumerate(ids):
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.append(send(i))
    return out


def _paced(rate: float, ids: range, send: Callable[[int], Timed]) -> list[Timed]:
    """Calls send(i) at a steady rate, each from its own thread, whether or not earlier
    calls have returned."""
    out: list[Timed] = []
    lock = threading.Lock()
    threads = []
    t0 = time.monotonic()
    for k, i in enumerate(ids):
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)

        def one(i: int = i) -> None:
            value = send(i)
            with lock:
                out.append(value)

        th = threading.Thread(target=one, daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(120)
    return out


def _figures(
    remote: list[Timed], local: list[Timed], single: list[Timed], wall_s: float
) -> dict[str, float]:
    def ms(timed: list[Timed]) -> list[float]:
        return [t * 1000 for t, _ in timed]

    def took(timed: list[Timed]) -> list[float]:
        return [took_ms for _, took_ms in timed]

    sent, here, alone = ms(remote), ms(local), ms(single)

    def q(values: list[float], at: float) -> float:
        return round(percentile(values, at), 1)

    return {
        "p50_ms": q(sent, 50),
        "p95_ms": q(sent, 95),
        "p99_ms": q(sent, 99),
        "inprocess_p50_ms": q(here, 50),
        "inprocess_p95_ms": q(here, 95),
        "inprocess_p99_ms": q(here, 99),
        "p50_overhead_ms": round(percentile(sent, 50) - percentile(here, 50), 1),
        "p99_overhead_ms": round(percentile(sent, 99) - percentile(here, 99), 1),
        # The server's own time on a request (its reply's took_ms): from the start of the batch
        # it was answered in to its reply, encoding and searching; no queueing, no transport.
        "took_p50_ms": q(took(remote), 50),
        "inprocess_took_p50_ms": q(took(local), 50),
        "search_alone_p50_ms": q(alone, 50),
        "search_alone_p99_ms": q(alone, 99),
        "requests_per_s": round(len(sent) / wall_s, 2),
    }


def _aged(
    settings: Settings,
    request: Callable[[int], SearchRequest],
    *,
    aged_events: int,
    rate: float,
    requests: int,
) -> dict[str, float]:
    """The Kafka side on a stack that has carried aged_events searches (see the module's note)."""
    tag = uuid.uuid4().hex[:6]
    topics = settings.topics
    aged = settings.model_copy(
        update={
            "topics": topics.model_copy(
                update={"search_requests": f"{topics.search_requests}-aged-{tag}"}
            )
        }
    )
    ensure_topics(aged)
    started = time.monotonic()
    age_topic(aged, aged.topics.search_requests, aged_events, group_id=aged.query.group_id)
    fill_s = time.monotonic() - started
    stack = EmbeddedStack(aged)
    stack.up(workers=["query"])
    try:
        with SearchClient(aged, timeout_s=60) as client:

            def send(i: int) -> Timed:
                t = time.perf_counter()
                reply = client.request(request(i))
                return time.perf_counter() - t, reply.took_ms

            send(0)
            began = time.monotonic()
            remote = _paced(rate, range(requests), send)
            wall = time.monotonic() - began
    finally:
        stack.stop(["query"])
    delete_topics(aged, request_generations(aged))
    sent = [t * 1000 for t, _ in remote]
    return {
        "events": aged_events,
        "fill_s": round(fill_s, 1),
        "p50_ms": round(percentile(sent, 50), 1),
        "p99_ms": round(percentile(sent, 99), 1),
        "took_p50_ms": round(percentile([took for _, took in remote], 50), 1),
        "requests_per_s": round(len(sent) / wall, 2),
    }


def aged_ratios(fresh: dict[str, float], aged: dict[str, float]) -> dict[str, float]:
    """Aged over fresh, per percentile of the Kafka side (1.2 is 20 % slower)."""
    return {
        f"aged_{k}_ratio": round(aged[k] / fresh[k], 3) for k in ("p50_ms", "p99_ms") if fresh[k]
    }


def _measure(
    kind: str,
    settings: Settings,
    service: SearchService,
    local_server: _InProcessServer,
    texts: list[str],
    photos: list[str | None],
    *,
    rate: float,
    requests: int,
    rounds: int,
    aged_events: int = 0,
) -> dict[str, Any]:
    """One kind of query at one size: the search alone, then in-process serving and Kafka in
    alternating rounds. The Kafka side gets a request topic and a query worker of its own, and
    a client (with its reply topic) for each round, so that no partition it uses holds more
    than this measurement's records (see the module's note on the embedded broker)."""
    topics = settings.topics
    measured = settings.model_copy(
        update={
            "topics": topics.model_copy(
                update={"search_requests": f"{topics.search_requests}-{uuid.uuid4().hex[:6]}"}
            )
        }
    )

    def request(i: int) -> SearchRequest:
        body: dict[str, Any] = {"request_id": uuid.uuid4().hex}
        if kind in ("text", "text2image"):
            body["text"] = texts[i % len(texts)]
            if kind == "text2image":
                body["scenario"] = "text2image"
        else:
            body["image_base64"] = photos[i % len(photos)]
        return SearchRequest.model_validate(body)

    def alone(i: int) -> Timed:
        t = time.perf_counter()
        reply = service.search(request(i))
        return time.perf_counter() - t, reply.took_ms

    def in_process(i: int) -> Timed:
        t = time.perf_counter()
        reply = local_server.ask(request(i))
        return time.perf_counter() - t, reply.took_ms

    def over_kafka(client: SearchClient) -> Callable[[int], Timed]:
        def send(i: int) -> Timed:
            t = time.perf_counter()
            reply = client.request(request(i))
            return time.perf_counter() - t, reply.took_ms

        return send

    ensure_topics(measured)
    # The query worker as its own process, the way it is deployed: the client's threads here
    # do not compete with it for this interpreter.
    stack = EmbeddedStack(measured)
    stack.up(workers=["query"])
    try:
        # Warm this kind's path on both sides.
        in_process(0)
        with SearchClient(measured, timeout_s=60) as client:
            over_kafka(client)(0)
        # As the worker does once started (workers._run): what is built so far is kept out of
        # the collector's full passes.
        gc.freeze()
        single = _sequential(rate, range(requests), alone)
        local: list[Timed] = []
        remote: list[Timed] = []
        wall = 0.0
        # Alternating rounds, so that a change in the machine's load while they run falls on
        # both sides alike: the shorter the rounds, the more evenly a burst of a few seconds is
        # shared (50 rounds of 20 requests: one second each).
        per_round = -(-requests // rounds)
        for start in range(0, requests, per_round):
            ids = range(start, min(requests, start + per_round))
            local += _paced(rate, ids, in_process)
            with SearchClient(measured, timeout_s=60) as client:
                # Untimed: a new producer first asks the broker for its id.
                over_kafka(client)(start)
                began = time.monotonic()
                remote += _paced(rate, ids, over_kafka(client))
                wall += time.monotonic() - began
    finally:
        stack.stop(["query"])
    delete_topics(measured, request_generations(measured))
    figures: dict[str, Any] = _figures(remote, local, single, wall)
    if aged_events:
        figures["aged"] = _aged(
            settings, request, aged_events=aged_events, rate=rate, requests=requests
        )
        figures.update(aged_ratios(figures, figures["aged"]))
    return figures


def run_query_bench(
    settings: Settings,
    *,
    sizes: tuple[int, ...] = (10_000, 100_000),
    rate: float = 20.0,
    requests: int = 1000,
    sample: int = 200,
    rounds: int = 50,
    aged_events: int = 0,
    kinds: tuple[str, ...] = ("text", "image"),
) -> dict[str, Any]:
    """kinds: "text" (words to products), "image" (a photo), "text2image" (words to photos)."""
    # The worker process builds its encoder from the settings: so does the reference here,
    # with the query worker's torch threads and without photo regions, and numpy's BLAS on
    # one thread as the worker does (workers._run). The seed rows are an indexer's, built
    # first (torch's thread count is the process's: the last encoder built sets it).
    indexer_encoder = build_encoder(settings)
    encoder = build_encoder(settings, threads=settings.query.encoder_threads, regions=False)
    limit_blas_threads(settings.blas_threads)
    rng = np.random.default_rng(7)
    products = catalogue(sample, prefix="q")
    texts = [p.title for p in products]
    photos = [p.images[0].data_base64 for p in products]
    out: dict[str, Any] = {"encoder": encoder.info.model_id, "rate_per_s": rate, "sizes": {}}
    with bench_settings(settings, partitions=2) as s:
        seeds = _seed_rows(indexer_encoder, s, sample)
        del indexer_encoder
        for n in sizes:
            tag = uuid.uuid4().hex[:6]
            sized = s.model_copy(
                update={"milvus": s.milvus.model_copy(update={"collection": f"q{n}_{tag}"})}
            )
            fusion = build_fusion(sized, encoder)
            # While 100k rows load, Milvus Lite seals and indexes segments on the same cores: a
            # write of the load may wait longer than a worker's timeout allows.
            loading = sized.model_copy(
                update={"milvus": sized.milvus.model_copy(update={"timeout_s": 300.0})}
            )
            store = build_store(loading, collection_spec(sized, encoder, fusion))
            store.ensure()
            started = time.monotonic()
            fused = _fill(store, seeds, n, rng)
            load_s = time.monotonic() - started
            index_wait_s = _wait_until_indexed(store, sized)

            # ANN recall@10 on the fused field against exact search over the same vectors.
            probes = fused[rng.choice(n, 100, replace=False)]
            probes = _jitter(probes, _JITTER, rng)
            ann = store.search("fused_vec", probes, 10)
            exact = np.argsort(-(probes @ fused.T), axis=1)[:, :10]
            recall = np.mean(
                [
                    len({h.id for h in a} & {f"p{j}" for j in e}) / 10
                    for a, e in zip(ann, exact, strict=True)
                ]
            )

            service = build_search_service(sized, encoder)
            figures: dict[str, Any] = {
                "load_s": round(load_s, 1),
                "index_wait_s": round(index_wait_s, 1),
                "ann_recall_at_10": round(float(recall), 4),
            }
            local_server = _InProcessServer(
                service, sized.query.batch_size, sized.query.batch_wait_ms / 1000
            )
            for kind in kinds:
                figures[kind] = _measure(
                    kind,
                    sized,
                    service,
                    local_server,
                    texts,
                    photos,
                    rate=rate,
                    requests=requests,
                    rounds=rounds,
                    aged_events=aged_events,
                )
            local_server.close()
            out["sizes"][str(n)] = figures
    return out
