"""Where product vectors live: the interface, Milvus, and an in-memory twin for unit tests."""

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
