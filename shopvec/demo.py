"""The demo: the embedded stack, the Myntra sample indexed, and searches in three scenarios."""

from __future__ import annotations

import time

from pymilvus import MilvusClient
from tqdm import tqdm

from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.client import SearchClient
from shopvec.present import print_reply
from shopvec.publish import EventPublisher
from shopvec.runtime import milvus_client
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack
from shopvec.store.milvus import milvus_literal

__all__ = ["DEMO_QUERIES", "run_demo"]

DEMO_QUERIES = [
    "blue denim jeans",
    "red dress for women",
    "black sports shoes",
    "黑色手表",  # black watch
    "蓝色牛仔裤",  # blue jeans
]
DEMO_IMAGE_PRODUCT = "myntra-27152"  # a blue striped shirt


def _indexed(client: MilvusClient, alias: str, ids: list[str]) -> int:
    found = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = client.query(
            alias,
            filter=f"id in {milvus_literal(chunk)} and deleted == false",
            output_fields=["count(*)"],
            timeout=10,
        )
        found += int(rows[0]["count(*)"])
    return found


def wait_indexed(settings: Settings, ids: list[str], timeout_s: float = 900.0) -> None:
    client = milvus_client(settings, timeout_s=10)
    try:
        with tqdm(total=len(ids), unit="product", desc="indexing") as bar:
            deadline = time.monotonic() + timeout_s
            while True:
                done = _indexed(client, settings.milvus.collection, ids)
                bar.update(done - bar.n)
                if done >= len(ids):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {done} of {len(ids)} products indexed in time")
                time.sleep(1.0)
    finally:
        client.close()


def run_demo(settings: Settings, *, keep_running: bool = True) -> int:
    stack = EmbeddedStack(settings)
    print(
        "Starting the embedded stack (Tansu broker, Milvus Lite, the indexer, query and behaviour"
        " workers, the HTTP API and page)"
    )
    # The stack `shopvec up` starts, the listener for older Kafka clients (kcat) included.
    stack.up(compat=True)
    try:
        products = list(myntra_products(DEMO_CATALOG))
        print(f"Publishing {len(products)} products of the Myntra sample")
        EventPublisher(settings).send_all(products, total=len(products))
        wait_indexed(settings, [p.id for p in products])
        photo = DEMO_CATALOG / "images" / f"{DEMO_IMAGE_PRODUCT.removeprefix('myntra-')}.jpg"
        with SearchClient(settings, timeout_s=30) as client:
            for text in DEMO_QUERIES:
                print()
                print_reply(client.search(text, top_k=5), query=text)
            print()
            print_reply(client.search(image=photo, top_k=5), query=f"photo {photo.name}")
            print()
            words = "blue shirt"
            print_reply(
                client.search(words, scenario="text2image", top_k=5),
                query=f"{words} (photos only)",
            )
    finally:
        if not keep_running:
            stack.down()
    if keep_running:
        page = f"http://127.0.0.1:{settings.http.port}/"
        print(
            "\nThe stack is still running. Search it with"
            ' `.venv/bin/shopvec search "white sneakers"`,'
            f' with `curl -s -X POST {page}v1/search -d \'{{"text": "white sneakers"}}\'`'
            " and stop it with `.venv/bin/shopvec down`."
        )
        print(f"\nThe search page: {page}")
    return 0
