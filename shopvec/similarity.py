"""Cosine and Euclidean similarity, the same in Milvus and in any re-ranking done in Python."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Metric", "score_from_cosine", "score_from_distance", "similarity"]

Metric = Literal["COSINE", "L2"]


def similarity(query: np.ndarray, candidates: np.ndarray, metric: Metric) -> np.ndarray:
    """Higher is better for both metrics: cosine as is, L2 as the negated squared distance
    (what Milvus reports for L2), so one sort order serves both."""
    query = np.asarray(query, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.float32)
    if metric == "COSINE":
        qn = query / max(float(np.linalg.norm(query)), 1e-12)
        cn = candidates / np.maximum(np.linalg.norm(candidates, axis=-1, keepdims=True), 1e-12)
        return cn @ qn
    diff = candidates - query
    return -np.einsum("nd,nd->n", diff, diff)


def score_from_distance(distance: float, metric: Metric) -> float:
    """Milvus returns a similarity for COSINE and a squared distance for L2."""
    return float(distance) if metric == "COSINE" else -float(distance)


def score_from_cosine(cosine: float, metric: Metric) -> float:
    """The score two unit vectors at this cosine get under the metric: the cosine itself, or
    for L2 minus their squared distance, 2 cos - 2."""
    return float(cosine) if metric == "COSINE" else 2.0 * float(cosine) - 2.0
