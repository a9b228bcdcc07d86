"""The product store interface, the collection layout, and search filters.

A product row keeps four vector fields so that each scenario searches the right one:
visual_vec (photo-to-photo), image_vec (photos in the joint space, for words-to-photo),
text_vec (words) and fused_vec (both). A delete is a tombstone row (deleted=true) that remembers
the version, so a late, older upsert cannot bring the product back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from shopvec.encoders.base import EncoderInfo
from shopvec.similarity import Metric

__all__ = [
    "SCALAR_OUTPUT_FIELDS",
    "VECTOR_FIELDS",
    "CollectionSpec",
    "Hit",
    "ProductStore",
    "SearchFilter",
    "StoredState",
    "VectorField",
]

VectorField = Literal["visual_vec", "image_vec", "text_vec", "fused_vec"]
VECTOR_FIELDS: tuple[VectorField, ...] = ("visual_vec", "image_vec", "text_vec", "fused_vec")
SCALAR_OUTPUT_FIELDS = (
    "id",
    "version",
    "title",
    "brand",
    "price",
    "in_stock",
    "category",
    "has_image",
    "has_text",
    "event_ms",
    "doc",
)


@dataclass(frozen=True)
class CollectionSpec:
    """What a physical collection holds; recorded in its properties when it is created."""

    alias: str
    encoder: EncoderInfo
    fusion_key: str
    fused_dim: int
    metric: Metric
    index_type: str = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200

    @property
    def name(self) -> str:
        return f"{self.alias}__{self.encoder.key}__{self.fusion_key}__{self.metric.lower()}"[:255]

    def dims(self) -> dict[VectorField, int]:
        return {
            "visual_vec": self.encoder.visual_dim,
            "image_vec": self.encoder.joint_dim,
            "text_vec": self.encoder.joint_dim,
            "fused_vec": self.fused_dim,
        }

    def properties(self) -> dict[str, str]:
        return {
            "shopvec.encoder_id": self.encoder.model_id,
            "shopvec.encoder_version": self.encoder.version,
            "shopvec.fusion": self.fusion_key,
            "shopvec.metric": self.metric,
        }


@dataclass(frozen=True)
class StoredState:
    version: int
    deleted: bool
    text_hash: str
    image_hash: str
    thumbnail: str | None = None
    """Kept so that an update that reuses the photo's vectors keeps its thumbnail too."""
    photo_confidence: float | None = None
    """Likewise the encoder's confidence in the photo (see ImageBatchVectors.confidence)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredState:
        doc = row.get("doc") or {}
        return cls(
            row["version"],
            row["deleted"],
            row["text_hash"],
            row["image_hash"],
            doc.get("thumbnail"),
            doc.get("photo_confidence"),
        )


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    """Higher is better, whatever the metric (see shopvec.similarity)."""
    fields: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    category: str | None = None
    brand: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    require_image: bool = False
    require_text: bool = False
    exclude_ids: tuple[str, ...] = ()

    def matches(self, row: dict[str, Any]) -> bool:
        """The same rule as the Milvus expression, for stores that evaluate it in Python."""
        if row["deleted"]:
            return False
        if self.category is not None and self.category not in row["category"]:
            return False
        if self.brand is not None and row["brand"] != self.brand:
            return False
        price = row["price"]
        if self.price_min is not None and not (price >= 0 and price >= self.price_min):
            return False
        if self.price_max is not None and not (0 <= price <= self.price_max):
            return False
        if self.in_stock is not None and row["in_stock"] != self.in_stock:
            return False
        attrs = row["doc"].get("attributes", {})
        if any(attrs.get(k) != v for k, v in self.attributes.items()):
            return False
        if self.require_image and not row["has_image"]:
            return False
        if self.require_text and not row["has_text"]:
            return False
        return row["id"] not in self.exclude_ids


class ProductStore(Protocol):
    @property
    def spec(self) -> CollectionSpec: ...

    def ensure(self) -> None:
        """Creates the collection (and the alias when none exists yet) if missing."""

    def state(self, ids: Sequence[str]) -> dict[str, StoredState]: ...

    def vectors(self, ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]: ...

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None:
        """Removes rows outright, tombstones included."""

    def flush(self) -> None:
        """Seals what was written so far so that it is searched through the index."""

    def search(
        self,
        field: VectorField,
        vectors: np.ndarray,
        limit: int,
        flt: SearchFilter | None = None,
    ) -> list[list[Hit]]: ...

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Live (not deleted) products' scalar fields and vectors."""
        ...

    def count(self) -> int:
        """Live products."""
        ...
