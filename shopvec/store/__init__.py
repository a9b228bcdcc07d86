"""Where product vectors live: the interface, Milvus, and an in-memory twin for unit tests."""

from shopvec.store.base import (
    VECTOR_FIELDS,
    CollectionSpec,
    Hit,
    ProductStore,
    SearchFilter,
    StoredState,
    VectorField,
)
from shopvec.store.memory import InMemoryProductStore
from shopvec.store.milvus import MilvusProductStore, filter_expression

__all__ = [
    "VECTOR_FIELDS",
    "CollectionSpec",
    "Hit",
    "InMemoryProductStore",
    "MilvusProductStore",
    "ProductStore",
    "SearchFilter",
    "StoredState",
    "VectorField",
    "filter_expression",
]
