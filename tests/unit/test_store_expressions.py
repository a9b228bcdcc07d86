"""Filter expressions read back by Milvus Lite's own parser and engine as the values they were
made from, whatever characters a catalogue's brands, categories and attributes hold."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("milvus_lite")

from milvus_lite import CollectionSchema, DataType, FieldSchema, MilvusLite

from shopvec.store import SearchFilter, filter_expression
from shopvec.store.milvus import key_filter, milvus_literal

AWKWARD = [
    'Sh"oes',
    "it's",
    "back\\slash",
    '\\"',
    "\\u0041",
    "new\nline",
    "carriage\rreturn",
    "tab\there",
    "\x00\x01\x08\x0c\x1f\x7f",
    "\u2028\u2029",
    "ünïcødé 蓝色牛仔裤 👗",
    "",
]


def _collection(db: MilvusLite) -> Any:
    schema = CollectionSchema(
        fields=[
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=32),
            FieldSchema("deleted", DataType.BOOL),
            FieldSchema("brand", DataType.VARCHAR, max_length=256),
            FieldSchema("price", DataType.DOUBLE),
            FieldSchema(
                "category",
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=16,
                max_length=128,
            ),
            FieldSchema("doc", DataType.JSON),
            FieldSchema("vec", DataType.FLOAT_VECTOR, dim=2),
        ]
    )
    col = db.create_collection("products", schema)
    col.create_index("vec", {"index_type": "BRUTE_FORCE", "metric_type": "L2"})
    col.load()
    return col


def test_every_string_filters_to_the_product_that_holds_it(tmp_path: Path) -> None:
    with MilvusLite(str(tmp_path / "db")) as db:
        col = _collection(db)
        col.insert(
            [
                {
                    "id": f"p{i}",
                    "deleted": False,
                    "brand": text,
                    "price": 10.0 + i,
                    "category": ["Apparel", text],
                    "doc": {"attributes": {text: text, "n": i}},
                    "vec": [0.0, float(i)],
                }
                for i, text in enumerate(AWKWARD)
            ]
        )
        for i, text in enumerate(AWKWARD):
            for flt in (
                SearchFilter(brand=text),
                SearchFilter(category=text),
                SearchFilter(attributes={text: text}),
                SearchFilter(attributes={"n": i}, exclude_ids=("x", text)),
            ):
                found = col.query(expr=filter_expression(flt), output_fields=["id"])
                assert [r["id"] for r in found] == [f"p{i}"], (text, flt)
        cheap = SearchFilter(price_min=10.5, price_max=11.0)
        assert [r["id"] for r in col.query(expr=filter_expression(cheap))] == ["p1"]


def test_literals_of_other_values() -> None:
    assert milvus_literal(True) == "true" and milvus_literal(False) == "false"
    assert milvus_literal(3) == "3" and milvus_literal(2.5) == "2.5"
    assert milvus_literal(["a", 1, ("b",)]) == '["a", 1, ["b"]]'
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="no literal"):
            milvus_literal(bad)
    with pytest.raises(TypeError):
        milvus_literal({"a": 1})


def test_rows_by_key_are_those_keys_alone(tmp_path: Path) -> None:
    """pymilvus's `ids=` put string keys between quotes unescaped; key_filter quotes them."""
    keys = ["x' or id != '", 'y" or id != "', "back\\slash", "it's", "plain"]
    with MilvusLite(str(tmp_path / "db")) as db:
        col = _collection(db)
        col.insert(
            [
                {
                    "id": key,
                    "deleted": False,
                    "brand": "",
                    "price": 1.0,
                    "category": [],
                    "doc": {},
                    "vec": [0.0, float(i)],
                }
                for i, key in enumerate(keys)
            ]
        )
        for key in keys:
            found = col.query(expr=key_filter("id", [key]), output_fields=["id"])
            assert [r["id"] for r in found] == [key]
        assert col.query(expr=key_filter("id", ["zz'] or id not in ['"])) == []
        both = col.query(expr=key_filter("id", keys[:2]), output_fields=["id"])
        assert sorted(r["id"] for r in both) == sorted(keys[:2])
