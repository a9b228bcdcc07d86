"""Words to photos by example (shopvec.search.photo_examples): each photo scored by its look
against the products the words find, its own product left out; the merge with the full-text
leg; the service's search through it, and its fallback."""

from __future__ import annotations

import numpy as np
import pytest

from schemas import ProductImage, ProductUpsert, SearchRequest
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.search import SearchService
from shopvec.search.photo_examples import PhotoExamples, likeness, merge
from shopvec.store import CollectionSpec, InMemoryProductStore
from shopvec.store.base import Hit, HybridRanker
from tests.unit.test_search_service import T0, Images, png


def _hit(pid: str, vector: list[float], score: float = 0.0) -> Hit:
    v = np.asarray(vector, np.float32)
    return Hit(pid, score, {"visual_vec": v / np.linalg.norm(v)})


A, B, C, D = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]


def test_a_photo_is_never_compared_with_its_own_product():
    examples = [_hit("a", A), _hit("b", A), _hit("c", B)]  # n = 2, "c" the spare
    scores = dict((h.id, s) for h, s in likeness([*examples, _hit("x", A)], examples, 2))
    assert scores["x"] == pytest.approx(1.0)  # against a and b
    assert scores["a"] == pytest.approx(0.5)  # against b and the spare c, not itself
    assert scores["b"] == pytest.approx(0.5)
    assert scores["c"] == pytest.approx(0.0)  # the spare is compared with the first two


def test_with_fewer_examples_than_asked_each_is_compared_with_the_rest():
    examples = [_hit("a", A), _hit("b", B)]
    scores = dict((h.id, s) for h, s in likeness([*examples, _hit("x", D)], examples, 10))
    assert scores["a"] == pytest.approx(0.0) and scores["b"] == pytest.approx(0.0)
    assert scores["x"] == pytest.approx(np.sqrt(0.5))  # the mean of its cosines to a and b


def test_a_candidate_without_its_vector_is_left_out():
    examples = [_hit("a", A), _hit("b", A)]
    assert [h.id for h, _ in likeness([Hit("x", 0.0, {}), *examples], examples, 2)] == ["a", "b"]


def test_merge_by_rrf_and_by_weights():
    ranked = [(Hit("x", 0.0, {"t": 1}), 0.9), (Hit("y", 0.0, {"t": 2}), 0.5)]
    lexical = [Hit("y", 3.0, {"t": 2}), Hit("z", 1.0, {"t": 3})]
    rrf = merge(ranked, lexical, HybridRanker("rrf", k=60), 10)
    scores = {h.id: h.score for h in rrf}
    assert scores == pytest.approx({"y": 1 / 62 + 1 / 61, "x": 1 / 61, "z": 1 / 62})
    assert [h.id for h in rrf] == ["y", "x", "z"] and rrf[2].fields == {"t": 3}
    weighted = merge(ranked, lexical, HybridRanker("weighted", lexical_weight=0.4), 2)
    assert [h.id for h in weighted] == ["y", "x"]
    assert weighted[1].score == pytest.approx(0.6 * (1 + 0.9) / 2)
    alone = merge(ranked, None, None, 1)
    assert [(h.id, h.score) for h in alone] == [("x", 0.9)]


def _service(examples: int) -> tuple[SearchService, InMemoryProductStore]:
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = InMemoryProductStore(
        CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    )
    red, blue = (220, 10, 10), (10, 10, 220)

    def product(pid: str, title: str, rgb: tuple[int, int, int]) -> ProductUpsert:
        return ProductUpsert(
            id=pid,
            version=1,
            updated_at=T0,
            title=title,
            images=[ProductImage(data_base64=png(rgb))],
        )

    ProductIndexer(enc, store, Images(), fusion).apply(
        [
            product("dress-1", "red dress", red),
            product("dress-2", "red dress", red),
            product("dress-3", "red dress", red),
            product("photo-only", "", red),
            product("shoe", "blue shoe", blue),
            product("misnamed", "red dress", blue),  # its words match, its photo does not
        ]
    )
    service = SearchService(
        enc,
        store,
        fusion,
        Images(),
        photo_examples=PhotoExamples(examples) if examples else None,
    )
    return service, store


def test_words_find_a_photo_without_words_by_the_photos_of_those_with_them():
    service, _ = _service(examples=3)
    reply = service.search(
        SearchRequest(request_id="q", text="red dress", scenario="text2image", top_k=10)
    )
    assert reply.error is None
    parts = {r.product_id: r.explanation["photo_examples"] for r in reply.results}
    likeness_of = {pid: part["likeness"] for pid, part in parts.items()}
    # The photo without words looks like the examples: none is liked more.
    assert likeness_of["photo-only"] == pytest.approx(max(likeness_of.values()))
    # Its own words never count: "misnamed" matches them, but its photo is blue.
    reds = ("dress-1", "dress-2", "dress-3", "photo-only")
    assert all(likeness_of["misnamed"] < likeness_of[pid] for pid in reds)
    assert set(parts["photo-only"]["examples"]) <= {"dress-1", "dress-2", "dress-3", "misnamed"}
    assert len(parts["photo-only"]["examples"]) == 3


def test_without_two_examples_the_search_is_its_own():
    with_examples, store = _service(examples=1)
    without, _ = _service(examples=0)
    request = SearchRequest(request_id="q", text="blue shoe", scenario="text2image", top_k=5)
    # One example asked for: the first and a spare make two, so it searches by example...
    assert "photo_examples" in with_examples.search(request).results[0].explanation
    # ... but on a store whose products have no words, nothing is an example.
    empty = InMemoryProductStore(store.spec)
    ProductIndexer(HashingEncoder(), empty, Images(), Fusion("weighted", 0.5, 64)).apply(
        [
            ProductUpsert(
                id="p", version=1, updated_at=T0, images=[ProductImage(data_base64=png((1, 2, 3)))]
            )
        ]
    )
    alone = SearchService(
        HashingEncoder(),
        empty,
        Fusion("weighted", 0.5, HashingEncoder().info.joint_dim),
        Images(),
        photo_examples=PhotoExamples(10),
    ).search(request)
    assert [r.product_id for r in alone.results] == ["p"]
    assert "photo_examples" not in alone.results[0].explanation
    assert "photo_examples" not in without.search(request).results[0].explanation


def test_other_scenarios_are_not_searched_by_example():
    service, _ = _service(examples=3)
    for scenario in ("text2product", "cross"):
        reply = service.search(
            SearchRequest(request_id="q", text="red dress", scenario=scenario, top_k=5)
        )
        assert all("photo_examples" not in r.explanation for r in reply.results)
