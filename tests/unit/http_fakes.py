"""A small catalogue behind the in-memory HTTP backend: six products (a shirt and a shoe in
red, green and blue, each with a plain photo of its colour) on the hashing encoder, for the API
tests and the browser tests."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime

from PIL import Image

from schemas import ProductImage, ProductUpsert
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.http import MemoryBackend
from shopvec.imaging import ImageLoader
from shopvec.indexing import ProductIndexer
from shopvec.search import SearchService
from shopvec.settings import ImageFetchSettings
from shopvec.store import CollectionSpec, InMemoryProductStore

__all__ = ["COLOURS", "memory_backend", "png"]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
COLOURS = {"red": (220, 10, 10), "green": (10, 200, 10), "blue": (10, 10, 220)}


def png(rgb: tuple[int, int, int], size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, "PNG")
    return buf.getvalue()


def memory_backend() -> MemoryBackend:
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = InMemoryProductStore(
        CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    )
    # No host is allowed: a URL in a search is refused before any lookup (no network here).
    images = ImageLoader(ImageFetchSettings(allow_hosts=["images.invalid"]))
    products = [
        ProductUpsert(
            id=f"{name}-{kind}",
            version=1,
            updated_at=T0,
            title=f"{name} {kind}",
            category_path=["Apparel", kind.title()],
            brand="Acme" if i % 2 else "Zed",
            price=10 + i,
            currency="EUR",
            in_stock=kind == "shirt",
            images=[ProductImage(data_base64=base64.b64encode(png(rgb)).decode())],
        )
        for i, (name, rgb) in enumerate(COLOURS.items())
        for kind in ("shirt", "shoe")
    ]
    ProductIndexer(enc, store, images, fusion).apply(products)
    return MemoryBackend(SearchService(enc, store, fusion, images, max_top_k=50), store)
