"""How a product's photos and words become one fused vector, and how a query meets it.

Every method keeps the fused vector on the unit sphere, so cosine and inner product agree and a
query built by `query_vector` scores as the same mix of modalities that built the product.
A missing modality is never a zero vector: the present one stands in for it, explicitly.

A photo's weight is the configured image_weight scaled by the encoder's confidence in that
photo's joint vector (`ImageBatchVectors.confidence`, 1 when the encoder gives none), and the
two weights are renormalised to sum to 1 (`photo_weight`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shopvec.encoders.base import l2_normalise

__all__ = ["Fusion", "FusionMethod"]

FusionMethod = Literal["weighted", "concat", "attention"]


@dataclass(frozen=True)
class Fusion:
    method: FusionMethod
    image_weight: float
    joint_dim: int

    @property
    def fused_dim(self) -> int:
        return 2 * self.joint_dim if self.method == "concat" else self.joint_dim

    @property
    def key(self) -> str:
        return f"{self.method}{round(self.image_weight * 100):02d}"

    def photo_weight(self, confidence: float | None = None) -> float:
        """The photo's share of the mix for a photo of this confidence (None: 1); the words
        get the rest."""
        c = 1.0 if confidence is None else min(max(float(confidence), 0.0), 1.0)
        photo, words = self.image_weight * c, 1.0 - self.image_weight
        return photo / (photo + words) if photo + words > 0 else 1.0

    def fuse(
        self,
        text: np.ndarray | None,
        photos: np.ndarray | None,
        confidence: np.ndarray | None = None,
    ) -> np.ndarray:
        """text: (d,) unit vector or None; photos: (k, d) unit rows (k >= 1) or None;
        confidence: (k,) per photo, or None for full confidence."""
        return self.fuse_with_confidence(text, photos, confidence)[0]

    def fuse_with_confidence(
        self,
        text: np.ndarray | None,
        photos: np.ndarray | None,
        confidence: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float | None]:
        """The fused vector and the confidence of the pooled photo (None without photos)."""
        if text is None and (photos is None or len(photos) == 0):
            raise ValueError("a product needs at least one modality to be fused")
        if photos is None or len(photos) == 0:
            return self._mix(text, None, None), None
        conf = np.ones(len(photos), np.float32) if confidence is None else np.asarray(confidence)
        image, pooled = self._pool_photos(text, photos, conf)
        return self._mix(text, image, pooled), pooled

    def query_vector(
        self,
        text: np.ndarray | None,
        image: np.ndarray | None,
        image_confidence: float | None = None,
    ) -> np.ndarray:
        """The vector to search the fused field with, for words, a photo, or both."""
        if text is None and image is None:
            raise ValueError("a query needs text or an image")
        return self._mix(text, image, image_confidence)

    def _pool_photos(
        self, text: np.ndarray | None, photos: np.ndarray, confidence: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """The photos as one unit vector, and its confidence pooled the same way."""
        if len(photos) == 1:
            return np.asarray(photos[0], dtype=np.float32), float(confidence[0])
        if self.method != "attention" or text is None:
            return l2_normalise(photos.mean(axis=0)), float(confidence.mean())
        # The title attends over the photos: softmax(q K^T / sqrt(d_k)) V. With unit vectors
        # scaled to norm sqrt(d) the logits are sqrt(d) * cosine, sharp enough to prefer the
        # photo that shows what the title names.
        logits = (photos @ text) * math.sqrt(self.joint_dim)
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        return l2_normalise(weights @ photos), float(weights @ confidence)

    def _mix(
        self, text: np.ndarray | None, image: np.ndarray | None, confidence: float | None
    ) -> np.ndarray:
        text = image if text is None else text
        image = text if image is None else image
        assert text is not None and image is not None
        w = self.photo_weight(confidence)
        if self.method == "concat":
            # Each half carries its own weight, so <q, p> = w cos_img + (1 - w) cos_text when query
            # and product have the same w.
            return np.concatenate([math.sqrt(w) * image, math.sqrt(1 - w) * text]).astype(
                np.float32
            )
        return l2_normalise(w * image + (1 - w) * text)
