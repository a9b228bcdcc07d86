"""The indexing pipeline on the in-memory store and the hashing encoder."""

import base64
import io
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image

from schemas import ProductDelete, ProductImage, ProductUpsert
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.imaging import ImageUnreachable
from shopvec.indexing import ProductIndexer
from shopvec.store import CollectionSpec, InMemoryProductStore, SearchFilter, filter_expression

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def png(colour: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Images:
    def __init__(self) -> None:
        self.loaded = 0

    def load_many(self, images: Sequence[ProductImage]) -> list[torch.Tensor | Exception]:
        out: list[torch.Tensor | Exception] = []
        for img in images:
            if img.url:
                out.append(ImageUnreachable(f"{img.url}: connection refused"))
                continue
            raw = base64.b64decode(img.data_base64 or "")
            arr = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
            out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
            self.loaded += 1
        return out


def upsert(pid: str, version: int, title: str = "red shirt", colour=(200, 0, 0), **kw):
    return ProductUpsert(
        id=pid,
        version=version,
        updated_at=T0,
        title=title,
        images=[ProductImage(data_base64=png(colour))],
        **kw,
    )


@pytest.fixture
def setup():
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    spec = CollectionSpec("products", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    store = InMemoryProductStore(spec)
    images = Images()
    return ProductIndexer(enc, store, images, fusion), store, enc, images


def test_newest_version_wins_and_replays_change_nothing(setup) -> None:
    indexer, store, _enc, _ = setup
    out = indexer.apply([upsert("a", 2, "new title"), upsert("a", 1, "old title")])
    assert out.written == 1 and out.stale == 1
    assert store.rows["a"]["title"] == "new title"
    late = indexer.apply([upsert("a", 1, "old title")])
    assert late.written == 0 and late.stale == 1
    replay = indexer.apply([upsert("a", 2, "new title")])
    assert replay.written == 0 and store.rows["a"]["version"] == 2


def test_delete_leaves_a_tombstone_that_beats_late_upserts(setup) -> None:
    indexer, store, _, _ = setup
    indexer.apply([upsert("a", 1)])
    indexer.apply([ProductDelete(id="a", version=2, updated_at=T0)])
    assert store.count() == 0 and store.rows["a"]["deleted"]
    indexer.apply([upsert("a", 2)])  # same version as the delete: the delete wins
    assert store.count() == 0
    indexer.apply([upsert("a", 3)])
    assert store.count() == 1


def test_price_only_update_reuses_vectors(setup) -> None:
    indexer, store, enc, images = setup
    indexer.apply([upsert("a", 1, price=10)])
    texts, imgs, loaded = enc.texts_seen, enc.images_seen, images.loaded
    out = indexer.apply([upsert("a", 2, price=12)])
    assert out.reused == 1 and out.encoded_texts == 0 and out.encoded_images == 0
    assert (enc.texts_seen, enc.images_seen, images.loaded) == (texts, imgs, loaded)
    assert store.rows["a"]["price"] == 12.0
    out = indexer.apply([upsert("a", 3, title="blue shirt", price=12)])
    assert out.encoded_texts == 1 and out.encoded_images == 0


def test_photo_confidence_weighs_the_photo_and_survives_reuse() -> None:
    enc = HashingEncoder(photo_confidence=0.25)
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    spec = CollectionSpec("products", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    store = InMemoryProductStore(spec)
    indexer = ProductIndexer(enc, store, Images(), fusion)
    indexer.apply([upsert("a", 1, price=10)])
    row = store.rows["a"]
    assert row["doc"]["photo_confidence"] == 0.25
    expected = fusion.fuse(row["text_vec"], row["image_vec"][None, :], np.array([0.25]))
    np.testing.assert_allclose(row["fused_vec"], expected, atol=1e-6)
    out = indexer.apply([upsert("a", 2, price=12)])
    assert out.reused == 1
    assert store.rows["a"]["doc"]["photo_confidence"] == 0.25
    np.testing.assert_allclose(store.rows["a"]["fused_vec"], expected, atol=1e-6)
    out = indexer.apply([upsert("a", 3, title="blue shirt", price=12)])
    assert out.encoded_texts == 1 and out.encoded_images == 0
    assert store.rows["a"]["doc"]["photo_confidence"] == 0.25


def test_unreachable_photo_fails_only_its_product(setup) -> None:
    indexer, store, _, _ = setup
    bad = ProductUpsert(
        id="b", version=1, updated_at=T0, title="x", images=[ProductImage(url="http://x/1.jpg")]
    )
    out = indexer.apply([upsert("a", 1), bad])
    assert [e.id for e, _ in out.failures] == ["b"]
    assert out.failures[0][1].kind == "image_unreachable"
    assert set(store.rows) == {"a"}


def test_missing_modalities_are_flagged_not_zeroed(setup) -> None:
    indexer, store, _, _ = setup
    indexer.apply(
        [
            ProductUpsert(id="t", version=1, updated_at=T0, title="words only"),
            ProductUpsert(
                id="p", version=1, updated_at=T0, images=[ProductImage(data_base64=png((0, 0, 9)))]
            ),
        ]
    )
    assert store.rows["t"]["has_text"] and not store.rows["t"]["has_image"]
    assert store.rows["p"]["has_image"] and not store.rows["p"]["has_text"]
    for row in store.rows.values():
        assert np.isclose(np.linalg.norm(row["fused_vec"]), 1.0, atol=1e-5)
    hits = store.search(
        "image_vec", store.rows["p"]["image_vec"][None], 5, SearchFilter(require_image=True)
    )
    assert [h.id for h in hits[0]] == ["p"]


def test_purge_removes_rows(setup) -> None:
    indexer, store, _, _ = setup
    indexer.apply([upsert("a", 1)])
    indexer.apply([], purge=["a", "a"])
    assert store.rows == {}


def test_filter_expression_escapes_and_combines() -> None:
    expr = filter_expression(
        SearchFilter(
            category='Sh"oes',
            brand="Acme",
            price_min=1,
            price_max=5,
            in_stock=True,
            attributes={"colour": "red"},
            require_image=True,
            exclude_ids=("x",),
        )
    )
    assert expr.startswith("deleted == false")
    assert 'ARRAY_CONTAINS(category, "Sh\\"oes")' in expr
    assert 'doc["attributes"]["colour"] == "red"' in expr
    assert "has_image == true" in expr and 'id not in ["x"]' in expr
