"""Hybrid searches in SearchService: which scenarios send words with the vector, to which
full-text field, and how each result's score is split into its lexical and dense parts.

The store here is the in-memory one with a stand-in full-text search (a product matches when
its words hold every query word, in order of how many it holds); the real analyzers, BM25 and
rankers are Milvus's, tested against Milvus Lite in tests/integration/test_hybrid_search.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from schemas import ProductUpsert, SearchRequest
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.indexing.pipeline import product_words
from shopvec.search import SearchService
from shopvec.search.lexical import RetrievalConfig, coverage, covered, lexical_parts
from shopvec.store import CollectionSpec, Hit, HybridRanker, InMemoryProductStore, SearchFilter

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class WordsStore(InMemoryProductStore):
    def __init__(self, spec: CollectionSpec) -> None:
        super().__init__(spec)
        self.calls: list[tuple[str, str | None]] = []
        self.rankers: list[HybridRanker] = []

    @property
    def lexical(self) -> bool:
        return True

    def lexical_search(self, field, texts, limit, flt=None):  # type: ignore[no-untyped-def]
        source = "words" if field == "words_sparse" else "photo_words"
        out = []
        for text in texts:
            wanted = text.lower().split()
            live = [r for r in self.rows.values() if (flt or SearchFilter()).matches(r)]
            scored = [
                (sum(w in r[source].lower().split() for w in wanted), r["id"], r) for r in live
            ]
            hits = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))
            out.append([Hit(i, float(n), r) for n, i, r in hits[:limit]])
        return out

    def hybrid_search(self, field, vectors, lexical_field, texts, limit, ranker, flt=None):  # type: ignore[no-untyped-def]
        self.calls.append((field, lexical_field))
        self.rankers.append(ranker)
        dense = self.search(field, vectors, limit, flt)
        words = self.lexical_search(lexical_field, texts, limit, flt)
        merged = []
        for d, w in zip(dense, words, strict=True):
            score: dict[str, float] = {}
            rows = {}
            for hits in (d, w):
                for rank, h in enumerate(hits, start=1):
                    score[h.id] = score.get(h.id, 0.0) + 1.0 / (ranker.k + rank)
                    rows[h.id] = h.fields
            order = sorted(score, key=lambda i: (-score[i], i))[:limit]
            merged.append([Hit(i, score[i], rows[i]) for i in order])
        return merged

    def search(self, field, vectors, limit, flt=None, with_vectors=()):  # type: ignore[no-untyped-def]
        self.calls.append((field, None))
        return super().search(field, vectors, limit, flt, with_vectors)


def _products() -> list[ProductUpsert]:
    return [
        ProductUpsert(id="a", version=1, updated_at=T0, title="linen summer dress"),
        ProductUpsert(id="b", version=1, updated_at=T0, title="wool winter coat", brand="Nord"),
        ProductUpsert(
            id="c",
            version=1,
            updated_at=T0,
            title="cotton tee",
            category_path=["Apparel", "Tshirts"],
            attributes={"material": "cotton", "sizes": ["S", "M"], "organic": True},
        ),
    ]


def _service(store_cls: type[InMemoryProductStore], retrieval: RetrievalConfig | None = None):  # type: ignore[no-untyped-def]
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = store_cls(CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE"))
    ProductIndexer(enc, store, _NoImages(), fusion).apply(_products())
    return SearchService(enc, store, fusion, _NoImages(), retrieval=retrieval), store


class _NoImages:
    def load_many(self, images: Sequence[object]) -> list[Exception]:
        return [RuntimeError("no photos here") for _ in images]


def test_product_words_hold_title_brand_path_attributes_description_and_colours() -> None:
    event = _products()[2].model_copy(update={"brand": "Acme", "description": "soft"})
    words = product_words(event, "red 红色")
    # Normalised for matching (shopvec.terms): "Tshirts" is stored as "tshirt".
    assert words == "cotton tee Acme Apparel tshirt cotton S M soft red 红色"


def test_product_words_keep_the_colours_when_the_rest_is_cut() -> None:
    event = _products()[0].model_copy(update={"description": "x" * 8000})
    words = product_words(event, "blue 蓝色")
    assert words.endswith(" blue 蓝色") and len(words.encode()) <= 8192


RRF = RetrievalConfig({"text2image": "rrf", "text2product": "rrf", "cross": "rrf"})


def test_text_searches_are_hybrid_on_their_full_text_field() -> None:
    svc, store = _service(WordsStore, RRF)
    reply = svc.search(SearchRequest(request_id="r", text="wool coat", top_k=3))
    assert store.calls[0] == ("fused_vec", "words_sparse")
    top = reply.results[0]
    assert top.product_id == "b"
    hybrid = top.explanation["hybrid"]
    assert hybrid["ranker"] == "rrf" and hybrid["lexical_field"] == "words_sparse"
    assert hybrid["lexical_rank"] == 1 and hybrid["bm25"] == 2.0
    assert hybrid["lexical_part"] == pytest.approx(1 / 61, abs=1e-6)
    assert hybrid["lexical_part"] + hybrid["dense_part"] == pytest.approx(top.score, abs=1e-5)
    assert top.explanation["scores"]["words_sparse"] == 2.0
    store.calls.clear()
    svc.search(SearchRequest(request_id="p", text="wool", scenario="text2image"))
    assert store.calls[0] == ("image_vec", "photo_sparse")


def test_dense_when_asked_configured_or_combined_by_the_request() -> None:
    svc, store = _service(WordsStore, RRF)
    reply = svc.search(SearchRequest(request_id="d", text="wool coat", retrieval="dense"))
    assert store.calls == [("fused_vec", None)]
    assert "hybrid" not in (reply.results[0].explanation or {})
    store.calls.clear()
    svc.search(SearchRequest(request_id="r", text="wool coat", ranker="rrf"))
    assert all(lexical is None for _, lexical in store.calls)
    dense, store = _service(WordsStore, RetrievalConfig.dense())
    dense.search(SearchRequest(request_id="c", text="wool coat"))
    assert store.calls == [("fused_vec", None)]
    # A request may ask for hybrid where the scenario is configured dense: rrf then.
    store.calls.clear()
    reply = dense.search(SearchRequest(request_id="h", text="wool coat", retrieval="hybrid"))
    assert store.calls[0] == ("fused_vec", "words_sparse")
    assert reply.results[0].explanation["hybrid"]["ranker"] == "rrf"


def test_configured_rankers_per_scenario() -> None:
    config = RetrievalConfig({"text2image": "rrf", "text2product": "weighted"}, 30, 0.1)
    assert config.ranker("text2image") == HybridRanker("rrf", 30, 0.1)
    assert config.ranker("text2product") == HybridRanker("weighted", 30, 0.1)
    assert config.ranker("cross") is None and config.ranker("image2image", "hybrid") is None
    assert config.ranker("text2product", "dense") is None


def test_a_store_without_full_text_stays_dense() -> None:
    svc, _ = _service(InMemoryProductStore)
    reply = svc.search(SearchRequest(request_id="m", text="wool coat", retrieval="hybrid"))
    assert reply.error is None and "hybrid" not in (reply.results[0].explanation or {})


def test_lexical_parts_follow_the_rankers_formulas() -> None:
    hits = [Hit("a", 0.9, {}), Hit("b", 0.5, {})]
    words = [Hit("b", 3.0, {})]
    rrf = lexical_parts(hits, words, HybridRanker("rrf", k=10))
    assert rrf["a"]["lexical_part"] == 0.0 and rrf["a"]["lexical_rank"] is None
    assert rrf["b"]["lexical_part"] == pytest.approx(1 / 11, abs=1e-6)
    weighted = lexical_parts(hits, words, HybridRanker("weighted", lexical_weight=0.3))
    assert weighted["b"]["lexical_part"] == pytest.approx(0.3 * 2 * math.atan(3.0) / math.pi)
    assert weighted["b"]["dense_part"] == pytest.approx(0.5 - 0.3 * 2 * math.atan(3.0) / math.pi)
    assert np.isclose(weighted["a"]["dense_part"], 0.9)


def test_coverage_is_the_largest_share_of_the_query_one_product_holds() -> None:
    def hits(*words: str) -> list[Hit]:
        return [Hit(str(i), 1.0, {"words": w}) for i, w in enumerate(words)]

    found = hits("navy polo tshirt", "blue denim jacket", "blue cotton tshirt")
    assert coverage("Blue Tshirts", found, "words") == 1.0  # normalised as the words are
    assert coverage("blue tshirts", found[:2], "words") == 0.5
    assert coverage("米色高跟鞋", hits("beige 米色", "heel"), "words") == 0.5
    assert coverage("Blue 牛仔裤", hits("修身蓝色牛仔裤 blue"), "words") == 1.0
    assert coverage("blue tshirts", [], "words") == 0.0
    assert coverage("!!!", found, "words") == 1.0  # no words: nothing to scale
    # A word of letters must be a whole word of the product's, not a part of one.
    assert coverage("tee", hits("teenage dream"), "words") == 0.0


def test_covered_scales_the_weighted_rankers_words_only() -> None:
    weighted = HybridRanker("weighted", 60, 0.4)
    assert covered(weighted, 1.0) == weighted
    assert covered(weighted, 0.5).lexical_weight == pytest.approx(0.05)
    assert covered(HybridRanker("rrf", 60, 0.4), 0.5) == HybridRanker("rrf", 60, 0.4)


def test_a_query_the_products_words_hold_in_part_weighs_its_words_less() -> None:
    svc, store = _service(WordsStore, RetrievalConfig({"text2product": "weighted"}))
    reply = svc.search(SearchRequest(request_id="w", text="wool coats", top_k=3))
    assert store.rankers[-1].lexical_weight == pytest.approx(0.4)
    assert reply.results[0].explanation["hybrid"]["coverage"] == 1.0
    reply = svc.search(SearchRequest(request_id="h", text="wool hat", top_k=3))
    assert store.rankers[-1].lexical_weight == pytest.approx(0.05)
    hybrid = reply.results[0].explanation["hybrid"]
    assert hybrid["coverage"] == 0.5 and hybrid["lexical_weight"] == pytest.approx(0.05)


def test_settings_default_is_the_services() -> None:
    from shopvec.search.lexical import DEFAULT_LEXICAL_WEIGHT, DEFAULT_RETRIEVAL, DEFAULT_RRF_K
    from shopvec.settings import Settings

    query = Settings().query
    assert query.retrieval == DEFAULT_RETRIEVAL
    assert (query.rrf_k, query.lexical_weight) == (DEFAULT_RRF_K, DEFAULT_LEXICAL_WEIGHT)
