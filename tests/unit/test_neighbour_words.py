"""Photo queries re-ranked by the words of the products they resemble
(shopvec.search.neighbour_words): the re-scoring alone, and in SearchService."""

from __future__ import annotations

import numpy as np
import pytest

from schemas import ProductImage, ProductUpsert, SearchRequest
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.search import SearchService
from shopvec.search.neighbour_words import NeighbourWords, rescore
from shopvec.store import CollectionSpec, Hit, InMemoryProductStore
from tests.unit.test_search_service import COLOURS, T0, Images, png

SHIRT = np.array([1.0, 0.0, 0.0], np.float32)
SHOE = np.array([0.0, 1.0, 0.0], np.float32)


def _hits(scores: dict[str, float]) -> list[Hit]:
    return [Hit(i, s, {}) for i, s in scores.items()]


def test_a_product_of_another_kind_than_the_neighbours_goes_down() -> None:
    hits = _hits({"a": 0.90, "b": 0.89, "c": 0.85, "d": 0.84})
    words = {"a": SHIRT, "b": SHOE, "c": SHIRT, "d": SHIRT}
    ranked, parts = rescore(hits, words, neighbours=3, weight=1.0, metric="COSINE")
    assert [h.id for h in ranked] == ["a", "c", "d", "b"]
    # Two shirts and a shoe among the three nearest: the mean words lean to shirts.
    assert parts["a"]["visual"] == 0.90
    assert parts["a"]["words"] == pytest.approx(2 / np.sqrt(5))
    assert parts["b"]["words"] == pytest.approx(1 / np.sqrt(5))
    assert ranked[0].score == pytest.approx(0.90 + 2 / np.sqrt(5))


def test_a_product_without_words_counts_the_lowest_words_part() -> None:
    hits = _hits({"a": 0.9, "b": 0.8, "none": 0.85})
    ranked, parts = rescore(
        hits, {"a": SHIRT, "b": SHOE}, neighbours=1, weight=1.0, metric="COSINE"
    )
    assert parts["none"] == {"visual": 0.85}
    # The lowest words' part is b's (0): "none" keeps its visual score and its place above b.
    assert [h.id for h in ranked] == ["a", "none", "b"]
    assert ranked[1].score == pytest.approx(0.85)


def test_euclidean_ranks_as_cosine_does() -> None:
    cosines = {"a": 0.90, "b": 0.89, "c": 0.85, "d": 0.84}
    words = {"a": SHIRT, "b": SHOE, "c": SHIRT, "d": SHIRT}
    by_cosine, _ = rescore(_hits(cosines), words, 3, 1.0, "COSINE")
    # Milvus's L2 score of unit vectors: minus the squared distance, 2 cos - 2.
    l2 = {i: 2 * c - 2 for i, c in cosines.items()}
    by_l2, _ = rescore(_hits(l2), words, 3, 1.0, "L2")
    assert [h.id for h in by_l2] == [h.id for h in by_cosine]


def test_no_neighbour_with_words_leaves_the_order_alone() -> None:
    hits = _hits({"a": 0.9, "b": 0.8})
    ranked, parts = rescore(hits, {}, neighbours=2, weight=1.0, metric="COSINE")
    assert ranked == hits
    assert parts == {}


def test_the_neighbours_are_asked_only_when_the_nearest_is_close() -> None:
    words = NeighbourWords(min_similarity=0.7)
    assert words.trusts(0.7, "COSINE")
    assert not words.trusts(0.69, "COSINE")
    assert not words.trusts(None, "COSINE")
    # Under L2 the bound is the squared distance of unit vectors at that cosine: 2 cos - 2.
    assert words.trusts(-0.6, "L2")
    assert not words.trusts(-0.62, "L2")


def test_a_photo_of_the_product_itself_keeps_its_own_order() -> None:
    words = NeighbourWords(min_similarity=0.7, max_similarity=0.99)
    assert words.trusts(0.98, "COSINE")
    assert not words.trusts(0.99, "COSINE")
    assert not words.trusts(1.0, "COSINE")
    assert not words.trusts(-0.0, "L2")  # the same vector
    assert words.trusts(2 * 0.98 - 2, "L2")


def _service(min_similarity: float, max_similarity: float = 1.01) -> SearchService:
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = InMemoryProductStore(
        CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    )
    products = [
        ProductUpsert(
            id=f"{name}-{kind}",
            version=1,
            updated_at=T0,
            title=f"{kind} {kind} {kind}",
            images=[ProductImage(data_base64=png(rgb))],
        )
        for name, rgb in COLOURS.items()
        for kind in ("shirt", "shoe")
    ]
    ProductIndexer(enc, store, Images(), fusion).apply(products)
    words = NeighbourWords(
        neighbours=1,
        weight=1.0,
        depth=50,
        min_similarity=min_similarity,
        max_similarity=max_similarity,
    )
    return SearchService(enc, store, fusion, Images(), max_top_k=50, neighbour_words=words)


@pytest.fixture
def service() -> SearchService:
    """Each colour as a shirt and a shoe with the same photo: only the words tell them apart.
    The queries are the products' own photos, so the bound that leaves those alone is lifted."""
    return _service(0.7, max_similarity=1.01)


def test_photo_queries_are_re_ranked_and_explained(service: SearchService) -> None:
    request = SearchRequest(request_id="q", image_base64=png(COLOURS["red"]), top_k=2)
    reply = service.search(request)
    assert reply.error is None
    assert len(reply.results) == 2  # fetched 50 deep, answered top_k
    # The two red photos are the same; the nearest (red-shirt, first by id) lends its words.
    assert [r.product_id for r in reply.results] == ["red-shirt", "red-shoe"]
    explained = reply.results[0].explanation["neighbour_words"]
    assert explained["words"] == pytest.approx(1.0, abs=1e-5)
    assert explained["weight"] == 1.0 and explained["neighbours"] == 1
    assert reply.results[0].score == pytest.approx(explained["visual"] + explained["words"])


def test_a_product_left_out_lends_no_words(service: SearchService) -> None:
    request = SearchRequest(request_id="q", image_base64=png(COLOURS["red"]), top_k=6)
    reply = service.search_many([request], exclude=[["red-shirt"]])[0]
    found = [r.product_id for r in reply.results]
    assert "red-shirt" not in found
    # red-shoe is now the nearest: its own words are the neighbours'.
    assert found[0] == "red-shoe"
    assert reply.results[0].explanation["neighbour_words"]["words"] == pytest.approx(1.0, abs=1e-5)
    # Each other colour's two products share a photo: the shoe's words put it first.
    for colour in ("green", "blue"):
        assert found.index(f"{colour}-shoe") < found.index(f"{colour}-shirt")


def test_other_rankers_and_scenarios_are_not_re_ranked(service: SearchService) -> None:
    photo = png(COLOURS["red"])
    combined = service.search(
        SearchRequest(request_id="q", image_base64=photo, top_k=2, ranker="rrf")
    )
    assert combined.error is None
    assert all("neighbour_words" not in r.explanation for r in combined.results)
    words = service.search(SearchRequest(request_id="w", text="shirt", top_k=2))
    assert all("neighbour_words" not in r.explanation for r in words.results)


def test_a_photo_far_from_every_product_keeps_its_own_order() -> None:
    photo = png(COLOURS["red"])
    trusted = _service(0.7).search(SearchRequest(request_id="q", image_base64=photo, top_k=6))
    # Nearer than any product can be: the neighbours are never asked.
    alone = _service(1.01).search(SearchRequest(request_id="q", image_base64=photo, top_k=6))
    assert alone.error is None and trusted.error is None
    assert all("neighbour_words" not in r.explanation for r in alone.results)
    assert all("neighbour_words" in r.explanation for r in trusted.results)
    found = [r.product_id for r in alone.results]
    # By the photo alone a colour's shirt and shoe tie, and the tie goes by id: shirt first.
    for colour in ("green", "blue"):
        assert found.index(f"{colour}-shirt") < found.index(f"{colour}-shoe")


def test_a_products_own_photo_keeps_its_own_order_by_default() -> None:
    photo = png(COLOURS["green"])
    reply = _service(0.7, max_similarity=0.99).search(
        SearchRequest(request_id="q", image_base64=photo, top_k=2)
    )
    assert reply.error is None
    assert [r.product_id for r in reply.results] == ["green-shirt", "green-shoe"]
    assert reply.results[0].score == pytest.approx(1.0, abs=1e-5)
    assert all("neighbour_words" not in r.explanation for r in reply.results)
