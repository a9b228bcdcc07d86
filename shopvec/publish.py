"""Publishing product events: keyed by product id, so each product's events stay in order."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from tqdm import tqdm

from schemas.product import ProductDelete, ProductUpsert
from schemas.wire import HEADER_CONTENT_TYPE, HEADER_SCHEMA_VERSION
from shopvec.catalog import read_jsonl
from shopvec.kafka.config import producer_config
from shopvec.settings import Settings

__all__ = ["EventPublisher", "publish_lines"]


class EventPublisher:
    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        # A bounded local queue: publishing a large catalogue waits for the broker instead of
        # holding the catalogue in memory.
        self._producer = Producer(
            producer_config(settings, **{"queue.buffering.max.kbytes": 65536})
        )
        self._topic = topic or settings.topics.products
        self._errors: list[str] = []

    def _on_delivery(self, err: object, msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send_raw(self, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    key=key,
                    value=value,
                    headers=[
                        (HEADER_CONTENT_TYPE, b"application/json"),
                        (HEADER_SCHEMA_VERSION, b"1"),
                    ],
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                # The local queue is full: let the broker catch up rather than grow memory.
                self._producer.poll(0.1)
        self._producer.poll(0)

    def send(self, event: ProductUpsert | ProductDelete) -> None:
        self.send_raw(event.id.encode(), event.to_bytes())

    def flush(self, timeout_s: float = 60.0) -> None:
        left = self._producer.flush(timeout_s)
        if left or self._errors:
            raise KafkaException(
                f"{left} events unsent, {len(self._errors)} failed: {self._errors[:3]}"
            )

    def send_all(
        self,
        events: Iterable[ProductUpsert | ProductDelete],
        *,
        total: int | None = None,
        progress: bool = True,
    ) -> int:
        count = 0
        for event in tqdm(
            events, total=total, unit="event", disable=not progress, desc="publishing"
        ):
            self.send(event)
            count += 1
        self.flush()
        return count


def publish_lines(settings: Settings, path: Path, *, topic: str) -> int:
    """Each line goes out as it is (bad lines too: the indexer dead-letters them with a
    reason). The key is the line's "id" when it has one."""
    publisher = EventPublisher(settings, topic)
    lines = list(read_jsonl(path))
    for _, raw in tqdm(lines, unit="event", desc="publishing"):
        key = None
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                key = body["id"].encode()
        except ValueError:
            pass
        publisher.send_raw(key, raw)
    publisher.flush()
    return len(lines)


def backfill(settings: Settings, path: Path) -> int:
    """A catalogue to the product topic, with a progress bar: a JSON Lines file of events, a
    folder of such files, or a folder in the sample's layout (styles.csv and images/)."""
    if path.is_dir() and (path / "styles.csv").exists():
        from shopvec.catalog import myntra_products

        products = list(myntra_products(path))
        return EventPublisher(settings).send_all(products, total=len(products))
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .jsonl files in {path}")
    return sum(publish_lines(settings, f, topic=settings.topics.products) for f in files)
