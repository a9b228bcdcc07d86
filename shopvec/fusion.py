"""How a product's photos and words become one fused vector, and how a query meets it.

Every method keeps the fused vector on the unit sphere, so cosine and inner product agree and a
query built by `query_vector` scores as the same mix of modalities that built the product.
A missing modality is never a zero vector: the present one stands in for it, explicitly.
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

    def fuse(self, text: np.ndarray | None, photos: np.ndarray | None) -> np.ndarray:
        """text: (d,) unit vector or None; photos: (k, d) unit rows (k >= 1) or None."""
        if text is None and (photos is None or len(photos) == 0):
            raise ValueError("a product needs at least one modality to be fused")
        image = None if photos is None or len(photos) == 0 else self._pool_photos(text, photos)
        return self._mix(text, image)

    def query_vector(self, text: np.ndarray | None, image: np.ndarray | None) -> np.ndarray:
        """The vector to search the fused field with, for words, a photo, or both."""
        if text is None and image is None:
            raise ValueError("a query needs text or an image")
        return self._mix(text, image)

    def _pool_photos(self, text: np.ndarray | None, photos: np.ndarray) -> np.ndarray:
        if len(photos) == 1:
            return np.asarray(photos[0], dtype=np.float32)
        if self.method != "attention" or text is None:
            return l2_normalise(photos.mean(axis=0))
        # The title attends over the photos: softmax(q K^T / sqrt(d_k)) V. With unit vectors
        # scaled to norm sqrt(d) the logits are sqrt(d) * cosine, sharp enough to prefer the
        # photo that shows what the title names.
        logits = (photos @ text) * math.sqrt(self.joint_dim)
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        return l2_normalise(weights @ photos)

    def _mix(self, text: np.ndarray | None, image: np.ndarray | None) -> np.ndarray:
        text = image if text is None else text
        image = text if image is None else image
        assert text is not None and image is not None
        w = self.image_weight
        if self.method == "concat":
            # Each half carries its own weight, so <q, p> = w cos_img + (1 - w) cos_text.
            return np.concatenate([math.sqrt(w) * image, math.sqrt(1 - w) * text]).astype(
                np.float32
            )
        return l2_normalise(w * image + (1 - w) * text)
