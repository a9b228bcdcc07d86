"""An honest in-memory ProductStore for unit tests: exact search over numpy arrays.

It has no full-text search (that is Milvus's analyzers and BM25, tested against the real Milvus
Lite): `lexical` is False, a lexical search finds nothing and a hybrid search is the dense one,
as on a Milvus collection created before the full-text fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shopvec.similarity import similarity
from shopvec.store.base import (
    VECTOR_FIELDS,
    CollectionSpec,
    Hit,
    HybridRanker,
    LexicalField,
    SearchFilter,
    StoredState,
    VectorField,
)

__all__ = ["InMemoryProductStore"]


class InMemoryProductStore:
    def __init__(self, spec: CollectionSpec) -> None:
        self._spec = spec
        self.rows: dict[str, dict[str, Any]] = {}
        self.upserts = 0

    @property
    def spec(self) -> CollectionSpec:
        return self._spec

    def ensure(self) -> None:
        return None

    def state(self, ids: Sequence[str]) -> dict[str, StoredState]:
        return {i: StoredState.from_row(r) for i in ids if (r := self.rows.get(i)) is not None}

    def vectors(
        self, ids: Sequence[str], fields: Sequence[VectorField] = VECTOR_FIELDS
    ) -> dict[str, dict[str, np.ndarray]]:
        return {
            i: {f: np.asarray(self.rows[i][f], np.float32) for f in fields}
            for i in ids
            if i in self.rows
        }

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.rows[row["id"]] = dict(row)
        self.upserts += len(rows)

    def flush(self) -> None:
        return None

    def delete(self, ids: Sequence[str]) -> None:
        for i in ids:
            self.rows.pop(i, None)

    def search(
        self,
        field: VectorField,
        vectors: np.ndarray,
        limit: int,
        flt: SearchFilter | None = None,
        with_vectors: Sequence[VectorField] = (),
    ) -> list[list[Hit]]:
        """A hit's fields are the whole row, its vectors included."""
        flt = flt or SearchFilter()
        live = [r for r in self.rows.values() if flt.matches(r)]
        if not live:
            return [[] for _ in vectors]
        matrix = np.stack([np.asarray(r[field], np.float32) for r in live])
        out = []
        for query in np.atleast_2d(vectors):
            scores = similarity(query, matrix, self._spec.metric)
            order = np.argsort(-scores, kind="stable")[:limit]
            out.append([Hit(live[i]["id"], float(scores[i]), live[i]) for i in order])
        return out

    @property
    def lexical(self) -> bool:
        return False

    def lexical_search(
        self,
        field: LexicalField,
        texts: Sequence[str],
        limit: int,
        flt: SearchFilter | None = None,
    ) -> list[list[Hit]]:
        return [[] for _ in texts]

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
        return self.search(field, vectors, limit, flt)

    def get(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: self.rows[i] for i in ids if i in self.rows and not self.rows[i]["deleted"]}

    def count(self) -> int:
        return sum(not r["deleted"] for r in self.rows.values())
