"""The product store interface, the collection layout, and search filters.

A product row keeps four vector fields so that each scenario searches the right one:
visual_vec (photo-to-photo), image_vec (photos in the joint space, for words-to-photo),
text_vec (words) and fused_vec (both). A delete is a tombstone row (deleted=true) that remembers
the version, so a late, older upsert cannot bring the product back.

Beside them, two analysed text fields feed Milvus's own full-text search: `words` (everything
the product says of itself, and the colour words of its photos) and `photo_words` (what its
photos alone say: their colour words). A BM25 function turns each into a sparse vector
(words_sparse, photo_sparse) that a search matches with the query's words, alone or together
with a vector field (`hybrid_search`, one of the library's rankers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from shopvec.encoders.base import EncoderInfo
from shopvec.similarity import Metric

__all__ = [
    "LEXICAL_FIELDS",
    "LEXICAL_SOURCES",
    "SCALAR_OUTPUT_FIELDS",
    "TEXT_MAX_BYTES",
    "TITLE_MAX_BYTES",
    "VECTOR_FIELDS",
    "CollectionSpec",
    "Hit",
    "HybridRanker",
    "LexicalField",
    "ProductStore",
    "SearchFilter",
    "StoredState",
    "VectorField",
    "clip_utf8",
]

VectorField = Literal["visual_vec", "image_vec", "text_vec", "fused_vec"]
VECTOR_FIELDS: tuple[VectorField, ...] = ("visual_vec", "image_vec", "text_vec", "fused_vec")
LexicalField = Literal["words_sparse", "photo_sparse"]
LEXICAL_FIELDS: tuple[LexicalField, ...] = ("words_sparse", "photo_sparse")
LEXICAL_SOURCES: dict[LexicalField, str] = {"words_sparse": "words", "photo_sparse": "photo_words"}
"""Each sparse field and the analysed text field its BM25 function reads."""
TEXT_MAX_BYTES: dict[str, int] = {"words": 8192, "photo_words": 512}
"""The analysed fields' lengths in UTF-8 bytes (Milvus counts VARCHAR lengths in bytes)."""
TITLE_MAX_BYTES = 1024
"""The stored title's length in UTF-8 bytes: a title of 512 characters may take 2,048, and the
stored copy (for display) keeps what fits; the words field and the encoder have it whole."""
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


def clip_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of text that fits in max_bytes of UTF-8, cut between characters."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode(errors="ignore")


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
    colour_words: str | None = None
    """Likewise the colour words read from the photos' pixels."""

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
            doc.get("colour_words"),
        )


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    """Higher is better, whatever the metric (see shopvec.similarity)."""
    fields: dict[str, Any]


@dataclass(frozen=True)
class HybridRanker:
    """How a hybrid search merges its dense and lexical legs (Milvus's RRFRanker or
    WeightedRanker). rrf: sum over legs of 1 / (k + rank). weighted: (1 - lexical_weight) times
    the dense similarity plus lexical_weight times the BM25 score, each first mapped to 0..1 by
    Milvus (cosine (1 + s) / 2, BM25 2 atan(s) / pi)."""

    kind: Literal["rrf", "weighted"] = "rrf"
    k: int = 60
    lexical_weight: float = 0.5


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

    def vectors(
        self, ids: Sequence[str], fields: Sequence[VectorField] = VECTOR_FIELDS
    ) -> dict[str, dict[str, np.ndarray]]:
        """The named vector fields of each stored row (ids not stored are left out)."""

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
        with_vectors: Sequence[VectorField] = (),
    ) -> list[list[Hit]]:
        """A hit's fields: the scalar output fields, and the vector fields in
        ``with_vectors``."""
        ...

    @property
    def lexical(self) -> bool:
        """Whether the collection holds the analysed fields (one created before them does
        not: its searches stay dense, its rows are written without words)."""
        ...

    def lexical_search(
        self,
        field: LexicalField,
        texts: Sequence[str],
        limit: int,
        flt: SearchFilter | None = None,
    ) -> list[list[Hit]]:
        """Full-text search; a hit's score is its BM25 score, its fields the scalar output
        fields and the field's words (LEXICAL_SOURCES)."""
        ...

    def hybrid_search(
        self,
        field: VectorField,
        vectors: np.ndarray,
        lexical_field: LexicalField,
        texts: Sequence[str],
        limit: int,
        ranker: HybridRanker,
        flt: SearchFilter | None = None,
    ) -> list[list[Hit]]:
        """The vector field and the full-text field searched together and merged by the
        ranker; a hit's score is the ranker's."""
        ...

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Live (not deleted) products' scalar fields and vectors."""
        ...

    def count(self) -> int:
        """Live products."""
        ...
