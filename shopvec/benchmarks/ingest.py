"""`shopvec bench ingest`: sustained products/s through broker, encoder and Milvus, against the
same encoder's raw batch throughput in the same run, then freshness at half that rate.

Freshness is measured from each event's updated_at (set when it is published) to the moment its
Milvus write returned, which is when a search can find it.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import UTC, datetime
from typing import Any

from shopvec.benchmarks.common import (
    bench_settings,
    catalogue,
    iter_catalogue,
    peak_rss_mb,
    percentile,
)
from shopvec.encoders.base import Encoder
from shopvec.imaging import ImageLoader
from shopvec.indexing.pipeline import IndexOutcome
from shopvec.publish import EventPublisher
from shopvec.runtime import build_encoder, build_indexer_service
from shopvec.settings import Settings
from shopvec.threads import limit_blas_threads

__all__ = ["run_ingest_bench"]


def _raw_encoder_rate(encoder: Encoder, settings: Settings, n: int, batch: int) -> float:
    products = catalogue(n, prefix="raw")
    loader = ImageLoader(settings.images)
    loaded = loader.load_many([p.images[0] for p in products])
    photos = [t for t in loaded if not isinstance(t, Exception)]
    texts = [p.text for p in products]
    encoder.encode_texts(texts[:batch])  # warm
    encoder.encode_images(photos[:batch])
    started = time.perf_counter()
    for i in range(0, n, batch):
        encoder.encode_texts(texts[i : i + batch])
        encoder.encode_images(photos[i : i + batch])
    return n / (time.perf_counter() - started)


def _publish_backlog(settings: Settings, n: int) -> None:
    EventPublisher(settings).send_all(iter_catalogue(n), total=n, progress=False)


def run_ingest_bench(
    settings: Settings,
    *,
    products: int = 1000,
    half_rate_products: int = 200,
    encoder: Encoder | None = None,
    raw_sample: int = 256,
) -> dict[str, Any]:
    encoder = encoder or build_encoder(settings)
    # The indexer runs here as in its worker process: numpy's BLAS on one thread
    # (workers._run), for the raw rate alike.
    limit_blas_threads(settings.blas_threads)
    warm = getattr(encoder, "warm_up", None)
    if warm is not None:
        warm()
    batch = settings.indexer.batch_size
    with bench_settings(settings) as s:
        raw = _raw_encoder_rate(encoder, s, min(raw_sample, products), batch)

        # Phase 1: a backlog, consumed as fast as the pipeline goes. It is published from a
        # process of its own, so that peak_rss_mb is the indexer's and not the publisher's.
        publisher_process = multiprocessing.get_context("spawn").Process(
            target=_publish_backlog, args=(s, products)
        )
        publisher_process.start()
        publisher_process.join()
        if publisher_process.exitcode != 0:
            raise RuntimeError("publishing the backlog failed")
        marks: list[tuple[float, IndexOutcome]] = []
        freshness: list[float] = []
        done = threading.Event()
        target = {"n": products}

        def on_batch(outcome: IndexOutcome) -> None:
            now = time.time()
            marks.append((now, outcome))
            freshness.extend(now - ms / 1000 for ms in outcome.written_event_ms)
            if sum(o.written for _, o in marks) >= target["n"]:
                done.set()

        service, _ = build_indexer_service(s, encoder, on_batch=on_batch)
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
        thread.start()
        if not done.wait(timeout=3600):
            raise TimeoutError("the backlog was not indexed within an hour")
        # Sustained: from the first batch's completion to the last one's, so the pipeline's
        # fill (group join, first fetch) is not counted, nor the products of that first batch.
        counted = sum(o.written for _, o in marks[1:])
        sustained = counted / (marks[-1][0] - marks[0][0])

        # Phase 2: freshness at half the sustained rate.
        marks.clear()
        freshness.clear()
        done.clear()
        target["n"] = half_rate_products
        rate = sustained / 2
        publisher = EventPublisher(s)
        fresh = catalogue(half_rate_products, prefix="fresh")
        t0 = time.monotonic()
        for i, product in enumerate(fresh):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publisher.send(product.model_copy(update={"updated_at": datetime.now(UTC)}))
            publisher._producer.poll(0)
        publisher.flush()
        done.wait(timeout=600)
        stop.set()
        thread.join(60)

    encode_batch_s = [o.encode_seconds for _, o in marks if o.encoded_images]
    bound = settings.indexer.batch_wait_ms / 1000 + percentile(encode_batch_s, 50) + 1.0
    return {
        "encoder": encoder.info.model_id,
        "products": products,
        "batch_size": batch,
        "products_per_s": round(sustained, 2),
        "raw_encoder_per_s": round(raw, 2),
        "ratio_to_raw_encoder": round(sustained / raw, 3),
        "half_rate_per_s": round(rate, 2),
        "freshness_p50_s": round(percentile(freshness, 50), 3),
        "freshness_p99_s": round(percentile(freshness, 99), 3),
        "freshness_bound_s": round(bound, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
