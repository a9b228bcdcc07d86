"""The embedded server's write path against Milvus Lite's own: a request's float vector column
reads as the stock translator's numbers (or gets its result or its error), and the write-ahead
log's batch built from it is the stock one; the record check passes and fails the same records
with the same errors, leaving them the same; and the block-by-block analyzer gives the stock
analyzer's tokens for English, Chinese, mixed and odd texts, again after its dictionary
changes."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

milvus_lite = pytest.importorskip("milvus_lite")
validation = pytest.importorskip("milvus_lite.schema.validation")
records = pytest.importorskip("milvus_lite.adapter.grpc.translators.records")
analyzer_hash = pytest.importorskip("milvus_lite.analyzer.hash")
jieba_analyzer = pytest.importorskip("milvus_lite.analyzer.jieba_analyzer")
jieba = pytest.importorskip("jieba")

from milvus_lite import CollectionSchema, DataType, FieldSchema, MilvusLite  # noqa: E402

from shopvec.store import lite  # noqa: E402

DIM = 6

# From their own modules: install() replaces the names the engine calls, and keeps these.
STOCK_VALIDATE = validation.validate_record
STOCK_FIND = lite._stock_find_vector or validation._find_float_vector
STOCK_TOKENIZE = lite._stock_tokenize or jieba_analyzer.JiebaAnalyzer.tokenize
STOCK_EXTRACT = lite._stock_extract_vector or records._extract_vector_column
STOCK_TERM_TO_ID = lite._stock_term_to_id or analyzer_hash.term_to_id


@pytest.fixture(autouse=True)
def _stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "_stock_validate", STOCK_VALIDATE)
    monkeypatch.setattr(lite, "_stock_find_vector", STOCK_FIND)
    monkeypatch.setattr(lite, "_stock_tokenize", STOCK_TOKENIZE)
    monkeypatch.setattr(lite, "_stock_extract_vector", STOCK_EXTRACT)
    monkeypatch.setattr(lite, "_stock_term_to_id", STOCK_TERM_TO_ID)
    monkeypatch.setattr(lite, "_term_ids", {})
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


def _field_data(
    values: list[float] | None, *, dim: int = DIM, dtype: int = 101, valid: list[bool] = ()
) -> Any:
    """A vector column of a request as pymilvus sends it."""
    fd = records.schema_pb2.FieldData(field_name="vec", type=dtype)
    fd.vectors.dim = dim
    if values is not None:
        fd.vectors.float_vector.data.extend(values)
    fd.valid_data.extend(valid)
    return fd


F32 = np.array([0.1, -2.5, 3e38, 1e-45, -0.0, 7.0], np.float32)

COLUMNS: dict[str, tuple[Any, int]] = {
    "two rows": (_field_data([*F32, *F32[::-1]]), 2),
    "one row": (_field_data(list(F32)), 1),
    "not a number and infinities": (
        _field_data([float("nan"), float("inf"), -float("inf"), 1e40, -1e40, 0.5]),
        1,
    ),
    "full rows beside valid data": (_field_data([*F32, *F32], valid=[True, True]), 2),
    "a null among two rows (compact)": (_field_data(list(F32), valid=[True, False]), 2),
    "too few floats": (_field_data(list(F32[:-1])), 1),
    "too many floats": (_field_data([*F32, 1.0]), 1),
    "no floats": (_field_data(None), 1),
    "no rows": (_field_data([]), 0),
    "no dimension": (_field_data(list(F32), dim=0), 1),
    "a binary vector": (_field_data(list(F32), dtype=100), 1),
    "a sparse vector without its data": (_field_data(None, dtype=104), 1),
}


def _column(fn: Any, fd: Any, rows: int) -> tuple[str, Any]:
    try:
        column = fn(fd, int(fd.type), rows)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", [v if v is None else np.asarray(v, np.float32).tobytes() for v in column]


@pytest.mark.parametrize("name", list(COLUMNS))
def test_a_vector_column_reads_as_with_the_stock_translator(name: str) -> None:
    fd, rows = COLUMNS[name]
    got, want = _column(lite.extract_vector_column, fd, rows), _column(STOCK_EXTRACT, fd, rows)
    assert got == want  # the same float32 bits (the stock lists' floats are float32s)


def test_a_full_column_reads_as_float32_rows_of_its_own() -> None:
    fd, rows = COLUMNS["two rows"]
    column = lite.extract_vector_column(fd, 101, rows)
    assert all(type(v) is lite.WireRow and v.dtype == np.float32 for v in column)
    assert [v.tolist() for v in column] == STOCK_EXTRACT(fd, 101, rows)
    column[0][0] = 5.0  # writable: nothing of the request's is shared
    assert column[1][-1] == F32[0]


def test_a_row_off_the_wire_passes_the_check_as_its_list_does() -> None:
    fd, _ = COLUMNS["one row"]
    (row,) = lite.extract_vector_column(fd, 101, 1)
    for changes in ({}, {"n": "1"}, {"id": None}, {"extra": 1}):
        got = _outcome(lite.validate_record, _record(vec=row, **changes), _schema())
        want = _outcome(STOCK_VALIDATE, _record(vec=row.tolist(), **changes), _schema())
        assert got[0] == want[0]
    short = lite.extract_vector_column(_field_data(list(F32[:3]), dim=3), 101, 1)[0]
    assert _outcome(lite.validate_record, _record(vec=short), _schema()) == _outcome(
        STOCK_VALIDATE, _record(vec=short), _schema()
    )


def test_the_write_ahead_batch_is_the_stock_one(tmp_path: Any) -> None:
    fd, _ = COLUMNS["two rows"]
    other = _field_data([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dim=3)
    wire = lite.extract_vector_column(fd, 101, 2), lite.extract_vector_column(other, 101, 2)
    lists = STOCK_EXTRACT(fd, 101, 2), STOCK_EXTRACT(other, 101, 2)
    with MilvusLite(str(tmp_path / "db")) as db:
        collection = db.create_collection("c", _schema(nullable=True))

        def batch(vec: list[Any], others: list[Any]) -> Any:
            rows = [_record(id=f"r{i}", vec=vec[i], other=others[i]) for i in range(2)]
            return collection._build_wal_data_batch(rows, "_default", [1, 2])

        assert batch(*wire).equals(batch(*lists))
        assert batch([wire[0][0], None], wire[1]).equals(batch([lists[0][0], None], lists[1]))


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


def test_the_same_term_ids_as_the_stock_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "_TERM_IDS_KEPT", 5)
    tokens = [t for text in TEXTS for t in text.split()] + ["", "x" * 100]
    for _ in range(2):  # the second time from the kept ids
        assert [lite.term_to_id(t) for t in tokens] == [STOCK_TERM_TO_ID(t) for t in tokens]
    assert len(lite._term_ids) == 5
    assert "x" * 100 not in lite._term_ids
