"""`shopvec bench http`: search latency through the HTTP API against the same requests through
the Python Kafka client (shopvec.client), at a steady rate, on a collection of the size asked.

Both sides go through the same query worker, running as its own process, and the HTTP service
runs as its own process too (`workers.http`, as `shopvec up` and the deployments run it). The
difference between the two is what the HTTP hop adds: parsing and validating the body, the
service's own produce to the requests topic and its wait on its reply topic, and the answer's
JSON. Rounds alternate between the sides, so that a change in the machine's load falls on both
alike; each side keeps one reply topic for the whole run (fewer replies than the 5,000 after
which a client of the embedded broker replaces its topic), so neither pays more than the other
for what the embedded broker's partitions hold.

The HTTP side keeps its connections open (a pool of keep-alive connections, as a storefront's
HTTP client does); a request that needs a new TCP connection on loopback pays about a tenth of
a millisecond more.
"""

from __future__ import annotations

import gc
import http.client
import json
import logging
import math
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas.search import SearchReply, SearchRequest
from shopvec.benchmarks.common import bench_settings, catalogue, percentile
from shopvec.benchmarks.query import _fill, _paced, _seed_rows, _wait_until_indexed
from shopvec.client import SearchClient
from shopvec.runtime import build_encoder, build_fusion, build_store, collection_spec
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack, free_port

__all__ = ["run_http_bench"]

log = logging.getLogger(__name__)


class _Connections:
    """Keep-alive HTTP/1.1 connections to one host, each used by one request at a time."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self._port = port
        self._timeout_s = timeout_s
        self._idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            conn, reused = self._idle.get_nowait(), True
        except queue.Empty:
            conn, reused = self._new(), False
        try:
            status, data = self._exchange(conn, path, body)
        except (OSError, http.client.HTTPException):
            conn.close()
            if not reused:
                raise
            # The server closed it while idle (uvicorn after 5 s): once more on a new one, as
            # an HTTP client's pool does.
            conn = self._new()
            status, data = self._exchange(conn, path, body)
        self._idle.put(conn)
        return status, data

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout_s)

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, answer.read()


Timed = tuple[float, float]
"""A request's latency in seconds as its sender saw it, and the took_ms its reply reports."""


def _figures(over_http: list[Timed], over_kafka: list[Timed]) -> dict[str, float]:
    web = [t * 1000 for t, _ in over_http]
    kafka = [t * 1000 for t, _ in over_kafka]

    def q(values: list[float], at: float) -> float:
        return round(percentile(values, at), 1)

    return {
        "http_p50_ms": q(web, 50),
        "http_p95_ms": q(web, 95),
        "http_p99_ms": q(web, 99),
        "kafka_p50_ms": q(kafka, 50),
        "kafka_p95_ms": q(kafka, 95),
        "kafka_p99_ms": q(kafka, 99),
        "p50_overhead_ms": round(percentile(web, 50) - percentile(kafka, 50), 1),
        "p99_overhead_ms": round(percentile(web, 99) - percentile(kafka, 99), 1),
        "took_p50_ms": q([took for _, took in over_http + over_kafka], 50),
        "http_answered": len(web),
        "kafka_answered": len(kafka),
    }


class _Samples:
    """What the runs of one query kind measured, side by side, pooled over runs."""

    def __init__(self) -> None:
        self.web: list[Timed] = []
        self.kafka: list[Timed] = []
        self.failures = {"http": 0, "kafka": 0}
        self.runs: list[dict[str, float]] = []

    def add(self, web: list[Timed], kafka: list[Timed]) -> None:
        web = [t for t in web if not math.isnan(t[0])]
        kafka = [t for t in kafka if not math.isnan(t[0])]
        self.web += web
        self.kafka += kafka
        self.runs.append(_figures(web, kafka))

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = _figures(self.web, self.kafka)
        out["http_failed"] = self.failures["http"]
        out["kafka_failed"] = self.failures["kafka"]
        if len(self.runs) > 1:
            for key in ("p99_overhead_ms", "p50_overhead_ms"):
                each = [run[key] for run in self.runs]
                out[f"{key}_each_run"] = each
                out[f"{key}_median_run"] = round(float(np.median(each)), 1)
        return out


def _measure(
    body: Callable[[int], dict[str, Any]],
    client: SearchClient,
    connections: _Connections,
    samples: _Samples,
    *,
    rate: float,
    requests: int,
    rounds: int,
) -> None:
    def over_kafka(i: int) -> Timed:
        request = SearchRequest.model_validate({"request_id": uuid.uuid4().hex, **body(i)})
        t = time.perf_counter()
        reply = client.request(request)
        elapsed = time.perf_counter() - t
        if reply.error is not None:
            raise RuntimeError(f"the Kafka side failed: {reply.error.message}")
        return elapsed, reply.took_ms

    def over_http(i: int) -> Timed:
        payload = json.dumps(body(i)).encode()
        t = time.perf_counter()
        status, data = connections.post("/v1/search", payload)
        elapsed = time.perf_counter() - t
        if status != 200:
            raise RuntimeError(f"the HTTP side answered {status}: {data[:300]!r}")
        return elapsed, SearchReply.model_validate_json(data).took_ms

    # Warm both paths: the worker's encoder for this kind, the service's first produce.
    for i in range(3):
        over_kafka(i)
        over_http(i)
    gc.freeze()
    failures = samples.failures

    def counted(side: str, send: Callable[[int], Timed]) -> Callable[[int], Timed]:
        def guarded(i: int) -> Timed:
            try:
                return send(i)
            except Exception as exc:
                failures[side] += 1
                log.warning("%s request %d failed: %s", side, i, exc)
                return math.nan, math.nan

        return guarded

    web: list[Timed] = []
    kafka: list[Timed] = []
    per_round = -(-requests // rounds)
    for start in range(0, requests, per_round):
        ids = range(start, min(requests, start + per_round))
        kafka += _paced(rate, ids, counted("kafka", over_kafka))
        web += _paced(rate, ids, counted("http", over_http))
    samples.add(web, kafka)


def run_http_bench(
    settings: Settings,
    *,
    products: int = 10_000,
    rate: float = 20.0,
    requests: int = 500,
    sample: int = 200,
    rounds: int = 25,
    kinds: tuple[str, ...] = ("text", "image"),
    repeat: int = 1,
) -> dict[str, Any]:
    """repeat: runs of every kind on the same stack and collection, one after the other; the
    figures pool their samples (a p99 of 500 requests is the fifth slowest, which one pause of
    the machine moves) and list each run's overheads."""
    encoder = build_encoder(settings, threads=settings.query.encoder_threads)
    rng = np.random.default_rng(7)
    seeds_catalogue = catalogue(sample, prefix="h")
    texts = [p.title for p in seeds_catalogue]
    photos = [p.images[0].data_base64 for p in seeds_catalogue]
    out: dict[str, Any] = {
        "encoder": encoder.info.model_id,
        "products": products,
        "rate_per_s": rate,
        "runs": repeat,
    }
    with bench_settings(settings, partitions=2) as s:
        port = free_port()
        s = s.model_copy(
            update={
                # The service waits as long as the Kafka client does (60 s).
                "http": s.http.model_copy(
                    update={"host": "127.0.0.1", "port": port, "timeout_s": 60.0}
                ),
                "milvus": s.milvus.model_copy(
                    update={"collection": f"h{products}_{uuid.uuid4().hex[:6]}"}
                ),
            }
        )
        seeds = _seed_rows(encoder, s, sample)
        fusion = build_fusion(s, encoder)
        loading = s.model_copy(update={"milvus": s.milvus.model_copy(update={"timeout_s": 300.0})})
        store = build_store(loading, collection_spec(s, encoder, fusion))
        store.ensure()
        _fill(store, seeds, products, rng)
        out["index_wait_s"] = round(_wait_until_indexed(store, s), 1)
        del encoder  # the worker process has its own; this one's memory is not needed

        stack = EmbeddedStack(s)
        stack.up(workers=["query", "http"])
        connections = _Connections(port, timeout_s=60)
        try:
            with SearchClient(s, timeout_s=60) as client:
                bodies: dict[str, Callable[[int], dict[str, Any]]] = {
                    "text": lambda i: {"text": texts[i % len(texts)]},
                    "image": lambda i: {"image_base64": photos[i % len(photos)]},
                }
                samples = {kind: _Samples() for kind in kinds}
                for _ in range(repeat):
                    for kind in kinds:
                        _measure(
                            bodies[kind],
                            client,
                            connections,
                            samples[kind],
                            rate=rate,
                            requests=requests,
                            rounds=rounds,
                        )
                for kind in kinds:
                    out[kind] = samples[kind].figures()
        finally:
            stack.stop(["http", "query"])
    out["p99_overhead_ms"] = max(out[kind]["p99_overhead_ms"] for kind in kinds)
    out["p50_overhead_ms"] = max(out[kind]["p50_overhead_ms"] for kind in kinds)
    return out
