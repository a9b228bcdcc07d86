"""Photo queries searched whole and as crops (shopvec.search.photo_crops)."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime

import numpy as np
import torch
from PIL import Image

from schemas import ProductImage, ProductUpsert, SearchRequest
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.search import SearchService
from shopvec.search.neighbour_words import NeighbourWords
from shopvec.search.photo_crops import PhotoCrops, crop_grid, merge_best
from shopvec.store import CollectionSpec, InMemoryProductStore
from shopvec.store.base import Hit
from tests.unit.test_search_service import Images

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_crop_grid_spans_the_image() -> None:
    image = torch.zeros((3, 100, 60), dtype=torch.uint8)
    crops = crop_grid(image, ((0.5, 3), (0.7, 2)))
    assert len(crops) == 9 + 4
    assert {tuple(c.shape) for c in crops[:9]} == {(3, 50, 30)}
    assert {tuple(c.shape) for c in crops[9:]} == {(3, 70, 42)}
    assert crop_grid(torch.zeros((3, 10, 10), dtype=torch.uint8), ((0.5, 2),)) == []


def test_merge_keeps_each_products_best_score() -> None:
    merged = merge_best(
        [[Hit("a", 0.5, {}), Hit("b", 0.4, {})], [Hit("b", 0.9, {}), Hit("c", 0.1, {})]], 2
    )
    assert [(h.id, h.score) for h in merged] == [("b", 0.9), ("a", 0.5)]


def _scene() -> tuple[HashingEncoder, InMemoryProductStore, Fusion, SearchRequest]:
    """Four one-colour products, and a shopper's photo: the red one in a corner of a scene in
    grey and teal stripes."""
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = InMemoryProductStore(
        CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    )
    colours = {
        "red": (220, 10, 10),
        "green": (10, 200, 10),
        "grey": (120, 120, 120),
        "teal": (10, 160, 160),
    }
    products = [
        ProductUpsert(
            id=name,
            version=1,
            updated_at=T0,
            title=name,
            images=[ProductImage(data_base64=_b64(Image.new("RGB", (24, 24), rgb)))],
        )
        for name, rgb in colours.items()
    ]
    ProductIndexer(enc, store, Images(), fusion).apply(products)
    scene = Image.new("RGB", (96, 96), colours["grey"])
    for x in range(0, 96, 12):
        scene.paste(Image.new("RGB", (6, 96), colours["teal"]), (x, 0))
    scene.paste(Image.new("RGB", (48, 48), colours["red"]), (0, 0))
    return enc, store, fusion, SearchRequest(request_id="q", image_base64=_b64(scene), top_k=2)


def test_a_small_product_on_a_busy_background_is_found_by_its_crop() -> None:
    enc, store, fusion, request = _scene()
    whole = SearchService(enc, store, fusion, Images()).search(request)
    crops = SearchService(enc, store, fusion, Images(), photo_crops=PhotoCrops()).search(request)
    assert whole.error is None and crops.error is None
    assert whole.results[0].product_id != "red"
    assert crops.results[0].product_id == "red"
    assert len(crops.results) == 2
    scores = [r.score for r in crops.results]
    assert scores == sorted(scores, reverse=True)
    assert np.isclose(scores[0], 1.0, atol=1e-5)  # one crop is all red


class CountingImages(Images):
    def __init__(self) -> None:
        self.loaded = 0

    def load_many(self, images):  # type: ignore[no-untyped-def]
        self.loaded += len(images)
        return super().load_many(images)


def test_the_query_photo_is_loaded_once_for_the_whole_and_its_crops() -> None:
    # A photo by URL was fetched twice (and could differ the second time), an inline one
    # decoded twice.
    enc, store, fusion, request = _scene()
    images = CountingImages()
    reply = SearchService(enc, store, fusion, images, photo_crops=PhotoCrops()).search(request)
    assert reply.results[0].product_id == "red"
    assert images.loaded == 1


def test_the_neighbours_words_judge_the_whole_photo_not_its_crops() -> None:
    enc, store, fusion, request = _scene()
    nearest = SearchService(enc, store, fusion, Images()).search(request).results[0].score
    assert nearest < 0.99  # while one crop is at 1.0

    def explained(min_similarity: float) -> bool:
        # No upper bound: the crop at 1.0 alone would be trusted if crops were judged.
        words = NeighbourWords(neighbours=1, min_similarity=min_similarity, max_similarity=1.01)
        service = SearchService(
            enc, store, fusion, Images(), photo_crops=PhotoCrops(), neighbour_words=words
        )
        reply = service.search(request)
        assert reply.error is None and reply.results[0].product_id == "red"
        return all("neighbour_words" in r.explanation for r in reply.results)

    assert not explained(0.99)
    assert explained(nearest - 0.01)
