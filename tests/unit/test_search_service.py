"""SearchService on the in-memory store and the hashing encoder: scenarios, rankers, paging,
deadlines, explanations."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from schemas import ProductImage, ProductUpsert, SearchRequest
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.search import SearchService
from shopvec.store import CollectionSpec, InMemoryProductStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
COLOURS = {"red": (220, 10, 10), "green": (10, 200, 10), "blue": (10, 10, 220)}


def png(rgb: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Images:
    def load_many(self, images: Sequence[ProductImage]) -> list[torch.Tensor | Exception]:
        out: list[torch.Tensor | Exception] = []
        for img in images:
            arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(img.data_base64 or ""))))
            out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        return out


class CountingStore(InMemoryProductStore):
    def __init__(self, spec: CollectionSpec) -> None:
        super().__init__(spec)
        self.calls = 0

    def search(self, field, vectors, limit, flt=None, with_vectors=()):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().search(field, vectors, limit, flt, with_vectors)


@pytest.fixture
def service() -> tuple[SearchService, CountingStore]:
    enc = HashingEncoder()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = CountingStore(CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE"))
    products = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        for kind in ("shirt", "shoe"):
            products.append(
                ProductUpsert(
                    id=f"{name}-{kind}",
                    version=1,
                    updated_at=T0,
                    title=f"{name} {kind}",
                    category_path=["Apparel", kind.title()],
                    brand="Acme" if i % 2 else "Zed",
                    price=10 + i,
                    images=[ProductImage(data_base64=png(rgb))],
                )
            )
    products.append(ProductUpsert(id="words-only", version=1, updated_at=T0, title="red scarf"))
    ProductIndexer(enc, store, Images(), fusion).apply(products)
    return SearchService(enc, store, fusion, Images(), max_top_k=50), store


def ids(reply) -> list[str]:  # type: ignore[no-untyped-def]
    assert reply.error is None, reply.error
    return [r.product_id for r in reply.results]


def test_each_scenario_searches_its_field(service) -> None:
    svc, _ = service
    red = png(COLOURS["red"])
    photo = svc.search(SearchRequest(request_id="a", image_base64=red, top_k=2))
    assert photo.scenario == "image2image"
    assert set(ids(photo)) == {"red-shirt", "red-shoe"}
    text2image = svc.search(SearchRequest(request_id="b", text="red", scenario="text2image"))
    assert "words-only" not in ids(text2image)  # no photo, not a text2image result
    product = svc.search(SearchRequest(request_id="c", text="red scarf", top_k=1))
    assert product.scenario == "text2product" and ids(product) == ["words-only"]
    cross = svc.search(SearchRequest(request_id="d", text="shoe", image_base64=red, top_k=3))
    assert cross.scenario == "cross" and ids(cross)[0] == "red-shoe"


def test_more_like_this_leaves_the_product_out(service) -> None:
    svc, _ = service
    reply = svc.search(SearchRequest(request_id="m", like_product_id="blue-shirt", top_k=3))
    assert reply.scenario == "more_like_this"
    assert "blue-shirt" not in ids(reply) and ids(reply)[0] == "blue-shoe"
    missing = svc.search(SearchRequest(request_id="n", like_product_id="nope"))
    assert missing.error is not None and missing.error.kind == "invalid_request"

    # A cross search asked for with neither words nor a photo has nothing to search by.
    nothing = svc.search(SearchRequest(request_id="c", scenario="cross", user_id="u1"))
    assert nothing.error is not None and nothing.error.kind == "invalid_request"
    assert nothing.error.message == "cross needs text, an image, or both"
    # A product id asks for more like this, under no other scenario: a recommendation with
    # one (and no user) passed the contract and failed every request of its batch.
    for scenario in ("cross", "recommend"):
        with pytest.raises(ValidationError, match=f"asks for more_like_this, not {scenario}"):
            SearchRequest(request_id="c", scenario=scenario, like_product_id="blue-shirt")
    with pytest.raises(ValidationError, match="more_like_this takes a like_product_id"):
        SearchRequest(request_id="c", scenario="more_like_this", text="shirt")


@pytest.mark.parametrize("ranker", ["rrf", "weighted"])
def test_rankers_combine_modalities_with_their_scores(service, ranker: str) -> None:
    svc, _ = service
    reply = svc.search(
        SearchRequest(request_id="r", text="green shoe", ranker=ranker, explain=True, top_k=3)
    )
    top = reply.results[0]
    assert top.product_id == "green-shoe"
    assert {"fused_vec", "text_vec"} <= set(top.explanation["scores"])
    assert top.explanation["combined"]["ranker"] == ranker
    assert [r.score for r in reply.results] == sorted(
        (r.score for r in reply.results), reverse=True
    )


def test_filters_and_paging(service) -> None:
    svc, _ = service
    acme = svc.search(
        SearchRequest(
            request_id="f", text="shoe", filters={"brand": "Acme", "category": "Shoe"}, top_k=10
        )
    )
    assert ids(acme) == ["green-shoe"]
    priced = svc.search(
        SearchRequest(request_id="p", text="shirt", filters={"price_min": 11, "price_max": 12})
    )
    assert set(ids(priced)) <= {"green-shirt", "green-shoe", "blue-shirt", "blue-shoe"}
    first = ids(svc.search(SearchRequest(request_id="1", text="shirt", top_k=2)))
    second = svc.search(SearchRequest(request_id="2", text="shirt", top_k=2, offset=2))
    assert [r.rank for r in second.results] == [3, 4]
    assert not set(first) & set(ids(second))
    too_far = svc.search(SearchRequest(request_id="3", text="x", top_k=40, offset=20))
    assert too_far.error is not None


def test_concurrent_requests_share_store_calls(service) -> None:
    svc, store = service
    store.calls = 0
    requests = [SearchRequest(request_id=str(i), text=f"red {i}") for i in range(12)]
    replies = svc.search_many(requests)
    assert [r.request_id for r in replies] == [r.request_id for r in requests]
    assert store.calls == 1


def test_deadline_cuts_short_and_says_so(service) -> None:
    svc, _ = service
    late = svc.search_many(
        [SearchRequest(request_id="late", text="red", deadline_ms=50, ranker="rrf")], [500.0]
    )[0]
    assert late.error is not None and late.error.kind == "timeout"
    tight = svc.search_many(
        [SearchRequest(request_id="tight", text="red", deadline_ms=50, ranker="rrf")], [49.999]
    )[0]
    assert tight.error is None and tight.truncated
    assert set(tight.results[0].explanation["scores"]) == {"fused_vec"}


def test_compact_explanations_by_default(service) -> None:
    svc, _ = service
    result = svc.search(SearchRequest(request_id="e", text="red shirt")).results[0]
    # The photos are plain red: their colour words come with the product.
    assert set(result.explanation) == {"field", "scores", "colours"}
    assert result.explanation["colours"] == "red 红色"
    assert result.thumbnail and result.thumbnail.startswith("data:image/jpeg;base64,")


def test_full_explanation_gives_the_photo_weight_applied() -> None:
    enc = HashingEncoder(photo_confidence=0.5)
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    store = InMemoryProductStore(
        CollectionSpec("p", enc.info, fusion.key, fusion.fused_dim, "COSINE")
    )
    product = ProductUpsert(
        id="a",
        version=1,
        updated_at=T0,
        title="red shirt",
        images=[ProductImage(data_base64=png(COLOURS["red"]))],
    )
    ProductIndexer(enc, store, Images(), fusion).apply([product])
    svc = SearchService(enc, store, fusion, Images())
    reply = svc.search(SearchRequest(request_id="e", text="red shirt", explain=True))
    explained = reply.results[0].explanation["fusion"]
    assert explained["photo_confidence"] == 0.5
    assert explained["photo_weight_applied"] == round(0.25 / 0.75, 4)
    cross = svc.search(
        SearchRequest(request_id="x", text="red shirt", image_base64=png(COLOURS["red"]))
    )
    assert ids(cross) == ["a"]


def test_chinese_words_are_searched_with_their_english_senses(
    service: tuple[SearchService, CountingStore],
) -> None:
    from shopvec.search.glossary import Glossary

    plain, store = service
    glossary = Glossary({"红色": ("red",), "围巾": ("scarf",)})
    seen: list[str] = []

    class Recording(HashingEncoder):
        def encode_texts(self, texts):  # type: ignore[no-untyped-def]
            seen.extend(texts)
            return super().encode_texts(texts)

    enc = Recording()
    fusion = Fusion("weighted", 0.5, enc.info.joint_dim)
    translated = SearchService(enc, store, fusion, Images(), max_top_k=50, glossary=glossary)
    reply = translated.search(
        SearchRequest(request_id="zh", text=" 红色围巾 ", scenario="text2product", top_k=3)
    )
    assert seen == ["红色围巾 red scarf"]
    # The words-only product is found by the English words the query now carries, as the
    # same words in English find it.
    english = plain.search(
        SearchRequest(request_id="en", text="红色围巾 red scarf", scenario="text2product", top_k=3)
    )
    assert ids(reply) == ids(english)
    assert reply.results[0].explanation["translated_words"] == "red scarf"
    seen.clear()
    reply = translated.search(SearchRequest(request_id="en", text="red scarf", top_k=3))
    assert seen == ["red scarf"] and "translated_words" not in reply.results[0].explanation


def test_a_request_whose_answer_fails_fails_alone(service, monkeypatch) -> None:
    """One request's failure after the batch's searches (a recommendation with a product id
    and no user passed the contract and failed so) is its own error, not the batch's."""
    svc, _ = service
    reply = SearchService._reply

    def fails_for_one(self: SearchService, plan: Any, started: float) -> Any:
        if plan.request.request_id == "bad":
            raise RuntimeError("its own failure")
        return reply(self, plan, started)

    monkeypatch.setattr(SearchService, "_reply", fails_for_one)
    good, bad = svc.search_many(
        [SearchRequest(request_id="good", text="red"), SearchRequest(request_id="bad", text="red")]
    )
    assert ids(good)
    assert bad.error is not None and bad.error.kind == "internal"
    assert "its own failure" in bad.error.message
