"""The embedded server's write path against Milvus Lite's own: the record check passes and
fails the same records with the same errors, leaving them the same, and the block-by-block
analyzer gives the stock analyzer's tokens for English, Chinese, mixed and odd texts, again
after its dictionary changes."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

milvus_lite = pytest.importorskip("milvus_lite")
validation = pytest.importorskip("milvus_lite.schema.validation")
jieba_analyzer = pytest.importorskip("milvus_lite.analyzer.jieba_analyzer")
jieba = pytest.importorskip("jieba")

from milvus_lite import CollectionSchema, DataType, FieldSchema  # noqa: E402

from shopvec.store import lite  # noqa: E402

DIM = 6

# From their own modules: install() replaces the names the engine calls, and keeps these.
STOCK_VALIDATE = validation.validate_record
STOCK_FIND = lite._stock_find_vector or validation._find_float_vector
STOCK_TOKENIZE = lite._stock_tokenize or jieba_analyzer.JiebaAnalyzer.tokenize


@pytest.fixture(autouse=True)
def _stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "_stock_validate", STOCK_VALIDATE)
    monkeypatch.setattr(lite, "_stock_find_vector", STOCK_FIND)
    monkeypatch.setattr(lite, "_stock_tokenize", STOCK_TOKENIZE)
    monkeypatch.setattr(validation, "_find_float_vector", lite._find_float_vector)


def _schema(nullable: bool = False) -> CollectionSchema:
    return CollectionSchema(
        fields=[
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=8),
            FieldSchema("n", DataType.INT64),
            FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM, nullable=nullable),
            FieldSchema("other", DataType.FLOAT_VECTOR, dim=3),
            FieldSchema("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=2),
            FieldSchema("note", DataType.VARCHAR, max_length=4, nullable=True),
        ]
    )


def _record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "a",
        "n": 1,
        "vec": [0.5, -1.0, 2.0, 0.0, 3.25, 1e-3],
        "other": [1.0, 2.0, 3.0],
        "tags": [1],
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not _GONE}


_GONE = object()

RECORDS = [
    _record(),
    _record(vec=[1, 2, 3, 4, 5, 6]),  # ints pass
    _record(vec=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0)),  # a tuple passes
    _record(vec=[0.0, 1.0, True, 3.0, 4.0, 5.0]),  # a bool does not
    _record(vec=[0.0, 1.0, "2", 3.0, 4.0, 5.0]),
    _record(vec=[0.0, 1.0, None, 3.0, 4.0, 5.0]),
    _record(vec=[np.float64(1.0)] * DIM),  # a float subclass: the stock check, which passes
    _record(vec=[np.float32(1.0)] * DIM),  # not a float: the stock check, which fails it
    _record(vec=np.zeros(DIM).tolist()[:-1]),  # too short
    _record(vec=[0.0] * (DIM + 1)),
    _record(vec=np.zeros(DIM)),  # not a list
    _record(vec="abcdef"),
    _record(vec=None),
    _record(vec=_GONE),
    _record(other=["x", "y", "z"]),  # the other vector field is not checked element-wise
    _record(n="1"),  # the rest of the record is still checked
    _record(id=None),
    _record(tags=[1, 2, 3]),
    _record(note="too long"),
    _record(extra=1),
    _record(n=_GONE),
]


def _outcome(fn: Any, record: Any, schema: CollectionSchema) -> tuple[str, Any]:
    try:
        fn(record, schema, default_properties=None)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", record


@pytest.mark.parametrize("nullable", [False, True])
@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_a_record_passes_or_fails_as_with_the_stock_check(index: int, nullable: bool) -> None:
    schema = _schema(nullable)
    want = _outcome(STOCK_VALIDATE, copy.deepcopy(RECORDS[index]), schema)
    got = _outcome(lite.validate_record, copy.deepcopy(RECORDS[index]), schema)
    assert got == want


def test_the_stock_check_is_whole_again_after_a_checked_record() -> None:
    lite.validate_record(_record(), _schema(), None)
    assert validation._find_float_vector(_schema()).name == "vec"
    with pytest.raises(milvus_lite.exceptions.SchemaValidationError, match="must be numeric"):
        STOCK_VALIDATE(_record(vec=[0.0, 1.0, "2", 3.0, 4.0, 5.0]), _schema())


def test_a_schema_without_a_dense_vector() -> None:
    schema = CollectionSchema(
        fields=[
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=8),
            FieldSchema("n", DataType.INT64),
        ]
    )
    for record in ({"id": "a", "n": 1}, {"id": "a", "n": "x"}, {"id": None, "n": 1}):
        assert _outcome(lite.validate_record, dict(record), schema) == _outcome(
            STOCK_VALIDATE, dict(record), schema
        )


TEXTS = [
    "",
    "   ",
    "Roadster Men Blue Slim Fit Denim Shirt",
    "蓝色牛仔裤 女士 修身",
    "red 红色 white 白色 dress",
    "T-shirt 3.5mm C++ 100% cotton_blend #1 a&b",
    "Men's  shoes,\tsize 9/10 — 深蓝色!!",
    "ÉLÉGANCE Ünïcode naïve café 😀 \uff46\uff55\uff4c\uff4c (full width)",
    "中华人民共和国中央人民政府 北京大学生前来应聘",
    "ABC abc AbC 123abc中文abc",
]


@pytest.mark.parametrize("mode", ["search", "exact"])
def test_the_same_tokens_as_the_stock_analyzer(mode: str) -> None:
    analyzer = jieba_analyzer.JiebaAnalyzer(mode=mode, stop_words={"men", "的"})
    for _ in range(2):  # the second time from the kept blocks
        for text in TEXTS:
            assert lite.tokenize(analyzer, text) == STOCK_TOKENIZE(analyzer, text)
    assert analyzer._shopvec_blocks


def test_a_changed_dictionary_drops_the_kept_blocks() -> None:
    analyzer = jieba_analyzer.JiebaAnalyzer()
    text = "shopvec超长新词汇测试"
    before = lite.tokenize(analyzer, text)
    assert before == STOCK_TOKENIZE(analyzer, text)
    jieba.add_word("超长新词汇", freq=100_000)
    try:
        after = lite.tokenize(analyzer, text)
        assert after == STOCK_TOKENIZE(analyzer, text)
        assert after != before
    finally:
        jieba.del_word("超长新词汇")


def test_the_kept_blocks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "_BLOCKS_KEPT", 3)
    analyzer = jieba_analyzer.JiebaAnalyzer()
    text = "one two three four five six"
    assert lite.tokenize(analyzer, text) == STOCK_TOKENIZE(analyzer, text)
    assert len(analyzer._shopvec_blocks) == 3
    long = "x" * (lite._BLOCK_KEPT_CHARS + 1)
    fresh = jieba_analyzer.JiebaAnalyzer()
    assert lite.tokenize(fresh, long) == STOCK_TOKENIZE(fresh, long)
    assert long not in fresh._shopvec_blocks
