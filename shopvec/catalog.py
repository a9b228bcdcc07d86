"""Catalogue files to product events: JSON Lines of events, and the Myntra sample folder."""

from __future__ import annotations

import base64
import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from schemas.product import ProductImage, ProductUpsert

__all__ = ["DEMO_CATALOG", "myntra_products", "read_jsonl"]

DEMO_CATALOG = Path(__file__).resolve().parent.parent / "data" / "myntra-fashion-1000"


def read_jsonl(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of each non-empty line; validation is the consumer's job, so
    that a bad line reaches the dead-letter topic with its reason rather than vanishing here."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if line:
                yield number, line


def myntra_products(folder: Path = DEMO_CATALOG, *, version: int = 1) -> Iterator[ProductUpsert]:
    """The Myntra sample (styles.csv + images/<id>.jpg) as product upserts, photos inline."""
    updated = datetime(2026, 1, 1, tzinfo=UTC)
    with open(folder / "styles.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            photo = folder / "images" / f"{row['id']}.jpg"
            images = []
            if photo.exists():
                images.append(
                    ProductImage(data_base64=base64.b64encode(photo.read_bytes()).decode())
                )
            yield ProductUpsert(
                id=f"myntra-{row['id']}",
                version=version,
                updated_at=updated,
                title=row["productDisplayName"],
                category_path=[row["masterCategory"], row["subCategory"], row["articleType"]],
                attributes={
                    k: row[k] for k in ("gender", "baseColour", "season", "usage") if row.get(k)
                },
                images=images,
            )
