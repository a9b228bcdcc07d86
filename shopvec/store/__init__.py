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

_HOMES = ("base", "memory", "milvus")
"""Where the names are, in the order looked in: a name of the interface loads nothing more."""


def __getattr__(name: str) -> Any:
    if name in __all__:
        for home in _HOMES:
            module = importlib.import_module(f"{__name__}.{home}")
            if hasattr(module, name):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
