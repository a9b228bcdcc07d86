"""Where product vectors live: the interface, Milvus, and an in-memory twin for unit tests.

The names below load on first use. `python -m shopvec.store.lite`, the embedded Milvus server,
imports this package and needs none of what the interface and the Milvus client bring with
them (torch through the encoders' types, pymilvus): loading those made the server take 2.4 s
instead of 1.3 to answer and hold 696 MB instead of 222.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopvec.store.base import (
        LEXICAL_FIELDS,
        VECTOR_FIELDS,
        CollectionSpec,
        Hit,
        HybridRanker,
        LexicalField,
        ProductStore,
        SearchFilter,
        StoredState,
        VectorField,
    )
    from shopvec.store.memory import InMemoryProductStore
    from shopvec.store.milvus import MilvusProductStore, filter_expression

__all__ = [
    "LEXICAL_FIELDS",
    "VECTOR_FIELDS",
    "CollectionSpec",
    "Hit",
    "HybridRanker",
    "InMemoryProductStore",
    "LexicalField",
    "MilvusProductStore",
    "ProductStore",
    "SearchFilter",
    "StoredState",
    "VectorField",
    "filter_expression",
]

_HOMES = {
    **dict.fromkeys(
        (
            "LEXICAL_FIELDS",
            "VECTOR_FIELDS",
            "CollectionSpec",
            "Hit",
            "HybridRanker",
            "LexicalField",
            "ProductStore",
            "SearchFilter",
            "StoredState",
            "VectorField",
        ),
        "base",
    ),
    "InMemoryProductStore": "memory",
    "MilvusProductStore": "milvus",
    "filter_expression": "milvus",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
