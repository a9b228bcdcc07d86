"""The embedded server's reply path against Milvus Lite's own: a float vector column of a
search's hits (float32 rows, or lists of exact floats) goes into the reply as the stock
translator puts it, byte for byte, and any other column (nulls, ints, numpy floats, float64
rows, wrong lengths, tuples, other types) goes through the stock translator and gets its
result or its error."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

milvus_lite = pytest.importorskip("milvus_lite")
records = pytest.importorskip("milvus_lite.adapter.grpc.translators.records")

from milvus_lite import DataType, FieldSchema  # noqa: E402

from shopvec.store import lite  # noqa: E402

DIM = 4

# From its own module's lite copy: install() replaces the name the translator calls.
STOCK = lite._stock_field_data or records._build_field_data


@pytest.fixture(autouse=True)
def _stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite, "_stock_field_data", STOCK)


VECTOR = FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM)
NULLABLE = FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM, nullable=True)
TEXT = FieldSchema("title", DataType.VARCHAR, max_length=16)

ROW = [0.5, -1.0, 2.0, 1e-3]
F32 = np.array([0.1, 0.2, 0.3, 0.4], np.float32)

COLUMNS: dict[str, tuple[FieldSchema, list[Any]]] = {
    "floats": (VECTOR, [ROW, [float(x) for x in F32], [0.0] * DIM]),
    "float32 rows": (VECTOR, [F32, F32[::-1].copy(), np.zeros(DIM, np.float32)]),
    "a float32 row's view": (VECTOR, [np.arange(2 * DIM, dtype=np.float32)[DIM:]]),
    "not a number and infinities": (VECTOR, [[float("nan"), float("inf"), -float("inf"), 1e40]]),
    "float32 rows, not a number": (VECTOR, [np.array([np.nan, np.inf, 0.0, -0.0], np.float32)]),
    "rows and lists": (VECTOR, [F32, ROW]),
    "float64 rows": (VECTOR, [F32.astype(np.float64)]),
    "a float32 row too short": (VECTOR, [F32[:3]]),
    "a float32 matrix": (VECTOR, [np.zeros((1, DIM), np.float32)]),
    "one row": (VECTOR, [ROW]),
    "no rows": (VECTOR, []),
    "ints among the floats": (VECTOR, [[1, 2.0, 3, 4.5]]),
    "a bool among the floats": (VECTOR, [[True, 2.0, 3.0, 4.0]]),
    "numpy floats": (VECTOR, [list(F32)]),
    "a numpy row": (VECTOR, [F32]),
    "a tuple": (VECTOR, [tuple(ROW)]),
    "too short": (VECTOR, [ROW[:3]]),
    "too long": (VECTOR, [[*ROW, 1.0]]),
    "a null": (NULLABLE, [ROW, None]),
    "a string among the floats": (VECTOR, [["a", 2.0, 3.0, 4.0]]),
    "not a vector": (TEXT, ["blue shirt", "红色"]),
}


def _outcome(fn: Any, schema: FieldSchema, column: list[Any]) -> tuple[str, bytes | str]:
    try:
        return "ok", fn("f", schema, list(column)).SerializeToString(deterministic=True)
    except Exception as error:  # the stock error is the outcome compared
        return type(error).__name__, str(error)


@pytest.mark.parametrize("case", sorted(COLUMNS))
def test_same_reply_or_error_as_the_stock_translator(case: str) -> None:
    schema, column = COLUMNS[case]
    assert _outcome(lite.build_field_data, schema, column) == _outcome(STOCK, schema, column)


def test_exact_floats_skip_the_stock_translator(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []

    def stock(name: str, schema: Any, column: list[Any]) -> Any:
        called.append(name)
        return STOCK(name, schema, column)

    monkeypatch.setattr(lite, "_stock_field_data", stock)
    lite.build_field_data("lists", VECTOR, [ROW, ROW])
    lite.build_field_data("rows", VECTOR, [F32, F32])
    lite.build_field_data("numpy floats", VECTOR, [list(F32)])
    lite.build_field_data("mixed", VECTOR, [F32, ROW])
    lite.build_field_data("text", TEXT, ["x"])
    assert called == ["numpy floats", "mixed", "text"]
