"""Hybrid lexical + dense search on the real Milvus Lite: the BM25 function over the analysed
words (jieba: English and Chinese alike), the library's rankers, and the colour words read
from a photo that has no words."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image

from schemas import ProductImage, ProductUpsert, SearchRequest
from shopvec.encoders import HashingEncoder
from shopvec.fusion import Fusion
from shopvec.indexing import ProductIndexer
from shopvec.runtime import build_store, collection_spec
from shopvec.search import SearchService
from shopvec.search.lexical import RetrievalConfig
from shopvec.search.photo_examples import PhotoExamples
from shopvec.settings import Settings
from shopvec.store import MilvusProductStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _photo(rgb: tuple[int, int, int]) -> str:
    image = Image.new("RGB", (60, 80), (255, 255, 255))
    image.paste(Image.new("RGB", (30, 40), rgb), (15, 20))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Images:
    def load_many(self, images: Sequence[ProductImage]) -> list[torch.Tensor | Exception]:
        out: list[torch.Tensor | Exception] = []
        for img in images:
            raw = Image.open(io.BytesIO(base64.b64decode(img.data_base64 or "")))
            out.append(torch.from_numpy(np.asarray(raw.convert("RGB")).copy()).permute(2, 0, 1))
        return out


def _product(pid: str, title: str = "", rgb: tuple[int, int, int] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    images = [ProductImage(data_base64=_photo(rgb))] if rgb else []
    return ProductUpsert(id=pid, version=1, updated_at=T0, title=title, images=images, **kw)  # type: ignore[arg-type]


PRODUCTS = [
    _product("jacket", "Classic denim jacket", brand="Roadster"),
    _product("jeans-zh", "修身蓝色牛仔裤", category_path=["服装", "裤子"]),
    _product("tee", "Cotton crew tee", attributes={"fit": "slim"}),
    _product("dress-photo", rgb=(210, 25, 35)),  # a photo and no words at all
    _product("shoe", "Running shoe", rgb=(30, 60, 200)),
    _product("bag", "Leather tote bag"),
    _product("tshirt", "Printed T-shirt"),
]


@pytest.fixture
def hybrid(settings: Settings) -> Iterator[tuple[SearchService, MilvusProductStore]]:
    encoder = HashingEncoder()
    fusion = Fusion("weighted", 0.5, encoder.info.joint_dim)
    store = build_store(settings, collection_spec(settings, encoder, fusion))
    store.ensure()
    ProductIndexer(encoder, store, Images(), fusion).apply(PRODUCTS)
    store.flush()
    rrf = RetrievalConfig({"text2image": "rrf", "text2product": "rrf", "cross": "rrf"})
    yield SearchService(encoder, store, fusion, Images(), retrieval=rrf), store
    store.client.drop_collection(store.collection)
    store.close()


def _top(service: SearchService, text: str, **kw: object) -> list[str]:
    reply = service.search(SearchRequest(request_id="q", text=text, top_k=10, **kw))  # type: ignore[arg-type]
    assert reply.error is None, reply.error
    return [r.product_id for r in reply.results]


def test_english_and_chinese_words_find_their_product_first(hybrid) -> None:
    service, store = hybrid
    assert store.lexical
    reply = service.search(SearchRequest(request_id="en", text="denim JACKET", top_k=10))
    top = reply.results[0]
    assert top.product_id == "jacket"
    hybrid_part = top.explanation["hybrid"]
    assert hybrid_part["ranker"] == "rrf" and hybrid_part["lexical_rank"] == 1
    assert hybrid_part["bm25"] > 0 and top.explanation["scores"]["words_sparse"] > 0
    assert hybrid_part["lexical_part"] == pytest.approx(1 / 61, abs=1e-6)
    assert hybrid_part["lexical_part"] + hybrid_part["dense_part"] == pytest.approx(
        top.score, abs=1e-5
    )
    assert _top(service, "牛仔裤")[0] == "jeans-zh"
    assert _top(service, "裤子")[0] == "jeans-zh"  # the category path is in the words
    assert _top(service, "roadster")[0] == "jacket"  # and the brand
    assert _top(service, "slim tee")[0] == "tee"  # and the attribute values


def test_plurals_and_hyphens_meet_their_singulars(hybrid) -> None:
    service, _ = hybrid
    assert _top(service, "denim jackets")[0] == "jacket"
    assert _top(service, "Tshirts")[0] == "tshirt"
    assert _top(service, "t-shirts")[0] == "tshirt"
    reply = service.search(SearchRequest(request_id="p", text="leather bags", top_k=10))
    assert reply.results[0].product_id == "bag"
    assert reply.results[0].explanation["hybrid"]["lexical_rank"] == 1


def test_colour_words_from_pixels_find_a_photo_without_words(hybrid) -> None:
    service, _ = hybrid
    assert _top(service, "red dress")[0] == "dress-photo"
    assert _top(service, "红色", scenario="text2image")[0] == "dress-photo"
    assert _top(service, "blue", scenario="text2image")[0] == "shoe"
    # Words to photos matches the photos' words only: a title never makes a photo match.
    reply = service.search(
        SearchRequest(request_id="t", text="leather bag", scenario="text2image", explain=True)
    )
    assert all(r.explanation["hybrid"]["lexical_rank"] is None for r in reply.results)
    # A mixed query: its Chinese colour and its English word both count.
    assert set(_top(service, "红色 shoe")[:2]) == {"dress-photo", "shoe"}


def test_words_find_photos_by_example(hybrid) -> None:
    # Words to photos by example: the products the words find lend their photos' look, and a
    # photo is scored against the others' only; merged with the colour words by RRF.
    _, store = hybrid
    encoder = HashingEncoder()
    fusion = Fusion("weighted", 0.5, encoder.info.joint_dim)
    red, blue = (210, 25, 35), (30, 60, 200)
    ProductIndexer(encoder, store, Images(), fusion).apply(
        [
            _product("gown-1", "Evening gown", red),
            _product("gown-2", "Evening gown", red),
            _product("gown-photo", rgb=red),  # no words: found by looking like the gowns
            _product("gown-blue", "Evening gown", blue),
        ]
    )
    store.flush()
    rrf = RetrievalConfig({"text2image": "rrf"})
    by_example = SearchService(
        encoder, store, fusion, Images(), retrieval=rrf, photo_examples=PhotoExamples(3)
    )
    reply = by_example.search(
        SearchRequest(request_id="g", text="evening gown", scenario="text2image", top_k=10)
    )
    assert reply.error is None
    found = {r.product_id: r for r in reply.results}
    parts = {pid: r.explanation["photo_examples"] for pid, r in found.items()}
    assert set(parts["gown-photo"]["examples"]) == {"gown-1", "gown-2", "gown-blue"}
    # The red photo without words looks like the examples more than the blue gown does, whose
    # words match as well as the red gowns' (each photo against the examples but its own).
    assert parts["gown-photo"]["likeness"] > parts["gown-blue"]["likeness"]
    ranked = [r.product_id for r in reply.results]
    assert ranked.index("gown-photo") < ranked.index("gown-blue")
    # The other red photo without words (the fixture's dress) is found the same way.
    assert parts["dress-photo"]["likeness"] > parts["gown-blue"]["likeness"]


def test_weighted_ranker_and_dense_only(hybrid) -> None:
    _, store = hybrid
    encoder = HashingEncoder()
    fusion = Fusion("weighted", 0.5, encoder.info.joint_dim)
    weighted = SearchService(
        encoder,
        store,
        fusion,
        Images(),
        retrieval=RetrievalConfig({"text2product": "weighted"}, lexical_weight=0.5),
    )
    reply = weighted.search(SearchRequest(request_id="w", text="denim jacket", top_k=10))
    top = reply.results[0]
    assert top.product_id == "jacket"
    parts = top.explanation["hybrid"]
    assert parts["ranker"] == "weighted" and parts["lexical_part"] > 0
    assert parts["coverage"] == 1.0 and parts["lexical_weight"] == 0.5
    assert parts["lexical_part"] + parts["dense_part"] == pytest.approx(top.score, abs=1e-5)
    # Half the words found in one product: an eighth of the weight, and Milvus merged with it.
    reply = weighted.search(SearchRequest(request_id="h", text="denim parka", top_k=10))
    top = reply.results[0]
    parts = top.explanation["hybrid"]
    assert parts["coverage"] == 0.5 and parts["lexical_weight"] == pytest.approx(0.0625)
    assert parts["lexical_part"] > 0
    assert parts["lexical_part"] + parts["dense_part"] == pytest.approx(top.score, abs=1e-5)
    dense = SearchService(encoder, store, fusion, Images(), retrieval=RetrievalConfig.dense())
    reply = dense.search(SearchRequest(request_id="d", text="denim jacket", top_k=10))
    assert "hybrid" not in reply.results[0].explanation


def test_filters_apply_to_both_legs_and_words_that_match_nothing(hybrid) -> None:
    service, _ = hybrid
    reply = service.search(
        SearchRequest(request_id="f", text="denim jacket", filters={"brand": "Roadster"})
    )
    assert [r.product_id for r in reply.results] == ["jacket"]
    assert service.search(SearchRequest(request_id="n", text="zzz qqq")).error is None
    assert service.search(SearchRequest(request_id="p", text="!!!")).error is None


def test_chinese_words_find_english_products_through_the_glossary(hybrid) -> None:
    """CC-CEDICT's senses join a Chinese query's words: "夹克" (jacket) and "手提包" (bag) find
    products whose words are English only, which the words as written cannot match."""
    from shopvec.search.glossary import cedict_glossary

    plain, store = hybrid
    encoder = HashingEncoder()
    fusion = Fusion("weighted", 0.5, encoder.info.joint_dim)
    rrf = RetrievalConfig({"text2image": "rrf", "text2product": "rrf", "cross": "rrf"})
    glossary = cedict_glossary()
    assert glossary.translate("夹克") == "夹克 jacket"
    translated = SearchService(encoder, store, fusion, Images(), retrieval=rrf, glossary=glossary)
    reply = translated.search(SearchRequest(request_id="zh", text="夹克", top_k=10))
    assert reply.error is None
    top = reply.results[0]
    assert top.product_id == "jacket"
    assert top.explanation["translated_words"] == "jacket"
    assert top.explanation["hybrid"]["lexical_rank"] == 1
    as_written = plain.search(SearchRequest(request_id="zh", text="夹克", top_k=10))
    assert all(r.explanation["hybrid"]["lexical_rank"] is None for r in as_written.results)
    assert _top(translated, "手提包")[0] == "bag"
    # Chinese words the products hold still match as written.
    assert _top(translated, "牛仔裤")[0] == "jeans-zh"
    # English queries are searched as they are.
    english = translated.search(SearchRequest(request_id="en", text="denim JACKET", top_k=10))
    assert "translated_words" not in english.results[0].explanation
