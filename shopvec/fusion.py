"""How a product's photos and words become one fused vector, and how a query meets it.

Every method keeps the fused vector on the unit sphere, so cosine and inner product agree and a
query built by `query_vector` scores as the same mix of modalities that built the product.
A missing modality is never a zero vector: the present one stands in for it, explicitly.

- ``weighted``: ``normalise(w_photo·photo + w_words·words)``, the photos averaged first.
- ``concat``: the two halves side by side, each scaled by the square root of its weight.
- ``attention``: cross-modal attention with the words as the query. Where the encoder gives
  region vectors (the cells of the photo model's last feature map, or a ViT's patch tokens,
  in the joint space), the words attend over every region of every photo,
  ``softmax(q K^T / sqrt(d)) V`` with K = V = the regions, so the photo side of the mix is the
  part of the photos that shows what the words name; without regions, over the photos.

A photo's weight follows ``weighting``:

- ``confidence``: the configured image_weight scaled by the encoder's confidence in that
  photo's joint vector (`ImageBatchVectors.confidence`, 1 when the encoder gives none); with
  attention over regions, by the attention-weighted confidence of the regions attended to;
- ``agreement``: that, times ``(1 + cos(photo, words)) / 2``: a photo that disagrees with the
  words moves the fused vector less (per product at indexing, per query for a query with both);
- ``fixed``: the configured image_weight, whatever the photo.

The two weights are renormalised to sum to 1 (`photo_weight`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shopvec.encoders.base import l2_normalise

__all__ = ["Fusion", "FusionMethod", "PhotoWeighting", "attention_weights"]

FusionMethod = Literal["weighted", "concat", "attention"]
PhotoWeighting = Literal["confidence", "agreement", "fixed"]

_KEY_SUFFIX: dict[PhotoWeighting, str] = {"confidence": "", "agreement": "agree", "fixed": "fixed"}


def attention_weights(
    query: np.ndarray, keys: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """softmax(q K^T / sqrt(d)) for a unit query (d,) over unit keys (n, d), both scaled to norm
    sqrt(d) as embeddings are, so that the logits are sqrt(d) times the cosines. ``mask`` (n,):
    False for keys that are not there (a missing photo, padding), which get weight 0. The
    weights sum to 1 over the keys that are there."""
    keys = np.asarray(keys, np.float32)
    present = np.ones(len(keys), bool) if mask is None else np.asarray(mask, bool)
    if present.shape != (len(keys),):
        raise ValueError(f"mask of shape {present.shape} for {len(keys)} keys")
    if not present.any():
        raise ValueError("attention needs at least one key that is there")
    scale = math.sqrt(keys.shape[1])
    logits = np.where(present, (keys @ np.asarray(query, np.float32)) * scale, -np.inf)
    weights = np.exp(logits - logits[present].max())
    return (weights / weights.sum()).astype(np.float32)


@dataclass(frozen=True)
class Fusion:
    method: FusionMethod
    image_weight: float
    joint_dim: int
    weighting: PhotoWeighting = "confidence"

    @property
    def fused_dim(self) -> int:
        return 2 * self.joint_dim if self.method == "concat" else self.joint_dim

    @property
    def key(self) -> str:
        base = f"{self.method}{round(self.image_weight * 100):02d}"
        return base + _KEY_SUFFIX[self.weighting]

    def photo_weight(
        self, confidence: float | None = None, agreement: float | None = None
    ) -> float:
        """The photo's share of the mix for a photo of this confidence (None: 1) whose cosine
        with the words is ``agreement`` (None: not known, no adjustment); the words get the
        rest."""
        c = 1.0 if confidence is None else min(max(float(confidence), 0.0), 1.0)
        if self.weighting == "fixed":
            c = 1.0
        elif self.weighting == "agreement" and agreement is not None:
            c *= (1.0 + min(max(float(agreement), -1.0), 1.0)) / 2
        photo, words = self.image_weight * c, 1.0 - self.image_weight
        return photo / (photo + words) if photo + words > 0 else 1.0

    def fuse(
        self,
        text: np.ndarray | None,
        photos: np.ndarray | None,
        confidence: np.ndarray | None = None,
        *,
        regions: np.ndarray | None = None,
        region_confidence: np.ndarray | None = None,
        region_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """text: (d,) unit vector or None; photos: (k, d) unit rows (k >= 1) or None;
        confidence: (k,) per photo, or None for full confidence; regions: (k, r, d) unit rows
        per photo (attention only), region_confidence (k, r), region_mask (k, r): False
        where a photo or region is missing."""
        return self.fuse_with_confidence(
            text,
            photos,
            confidence,
            regions=regions,
            region_confidence=region_confidence,
            region_mask=region_mask,
        )[0]

    def fuse_with_confidence(
        self,
        text: np.ndarray | None,
        photos: np.ndarray | None,
        confidence: np.ndarray | None = None,
        *,
        regions: np.ndarray | None = None,
        region_confidence: np.ndarray | None = None,
        region_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float | None]:
        """The fused vector and the confidence of the pooled photo (None without photos)."""
        if text is None and (photos is None or len(photos) == 0):
            raise ValueError("a product needs at least one modality to be fused")
        if photos is None or len(photos) == 0:
            return self._mix(text, None, None), None
        conf = np.ones(len(photos), np.float32) if confidence is None else np.asarray(confidence)
        if self.method == "attention" and text is not None and regions is not None:
            image, pooled = self._attend_regions(text, regions, region_confidence, region_mask)
        else:
            image, pooled = self._pool_photos(text, photos, conf)
        return self._mix(text, image, pooled), pooled

    def region_attention(
        self,
        text: np.ndarray,
        regions: np.ndarray,
        region_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """The attention of the words over the regions, (k, r), summing to 1 over those there."""
        k, r, d = regions.shape
        mask = None if region_mask is None else np.asarray(region_mask, bool).reshape(k * r)
        return attention_weights(text, regions.reshape(k * r, d), mask).reshape(k, r)

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

    def _attend_regions(
        self,
        text: np.ndarray,
        regions: np.ndarray,
        region_confidence: np.ndarray | None,
        region_mask: np.ndarray | None,
    ) -> tuple[np.ndarray, float]:
        regions = np.asarray(regions, np.float32)
        if regions.ndim != 3 or regions.shape[2] != self.joint_dim:
            raise ValueError(f"regions must be (photos, regions, {self.joint_dim})")
        weights = self.region_attention(text, regions, region_mask)
        image = l2_normalise(np.einsum("kr,krd->d", weights, regions))
        if region_confidence is None:
            return image, 1.0
        conf = np.nan_to_num(np.asarray(region_confidence, np.float32), nan=1.0)
        return image, float((weights * conf).sum())

    def _pool_photos(
        self, text: np.ndarray | None, photos: np.ndarray, confidence: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """The photos as one unit vector, and its confidence pooled the same way."""
        if len(photos) == 1:
            return np.asarray(photos[0], dtype=np.float32), float(confidence[0])
        if self.method != "attention" or text is None:
            return l2_normalise(photos.mean(axis=0)), float(confidence.mean())
        # The title attends over the photos: softmax(q K^T / sqrt(d_k)) V.
        weights = attention_weights(text, photos)
        return l2_normalise(weights @ photos), float(weights @ confidence)

    def _mix(
        self, text: np.ndarray | None, image: np.ndarray | None, confidence: float | None
    ) -> np.ndarray:
        agreement = None
        if text is not None and image is not None:
            agreement = float(np.dot(text, image))
        text = image if text is None else text
        image = text if image is None else image
        assert text is not None and image is not None
        w = self.photo_weight(confidence, agreement)
        if self.method == "concat":
            # Each half carries its own weight, so <q, p> = w cos_img + (1 - w) cos_text when query
            # and product have the same w.
            return np.concatenate([math.sqrt(w) * image, math.sqrt(1 - w) * text]).astype(
                np.float32
            )
        return l2_normalise(w * image + (1 - w) * text)
