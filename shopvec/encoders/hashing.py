"""A small, deterministic encoder with no weights: for unit tests of everything around it.

Texts become hashed character trigrams; images become colour histograms. Both are projected
into one joint space by a fixed random matrix, so similar words and similar colours land near
each other. It is no substitute for a trained model, only an honest stand-in where the test is
about the plumbing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from shopvec.encoders.base import EncoderInfo, ImageBatchVectors, l2_normalise

__all__ = ["HashingEncoder"]

_BUCKETS = 512


class HashingEncoder:
    def __init__(
        self,
        joint_dim: int = 32,
        visual_dim: int = 24,
        seed: int = 7,
        photo_confidence: float | None = None,
        regions: bool = False,
    ) -> None:
        """photo_confidence: reported for every photo (None: none reported), for tests of
        what fusion does with it; regions: also give the four quadrants of each photo as its
        regions, projected as the photo is."""
        self._photo_confidence = photo_confidence
        self.gives_regions = regions
        self.concurrent_images = True
        rng = np.random.default_rng(seed)
        self._text_proj = rng.standard_normal((_BUCKETS, joint_dim)).astype(np.float32)
        self._image_proj = rng.standard_normal((48, joint_dim)).astype(np.float32)
        self._visual_proj = rng.standard_normal((48, visual_dim)).astype(np.float32)
        self._info = EncoderInfo("hashing", f"{seed}", joint_dim, visual_dim)
        self.texts_seen = 0
        self.images_seen = 0

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.texts_seen += len(texts)
        counts = np.zeros((len(texts), _BUCKETS), dtype=np.float32)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()}  "
            for i in range(len(padded) - 2):
                h = hashlib.blake2b(padded[i : i + 3].encode(), digest_size=4).digest()
                counts[row, int.from_bytes(h, "little") % _BUCKETS] += 1
        return l2_normalise(counts @ self._text_proj)

    def encode_images(self, images: Sequence[torch.Tensor]) -> ImageBatchVectors:
        self.images_seen += len(images)
        hists = np.stack([_histogram(img) for img in images]) if images else np.zeros((0, 48))
        regions = None
        if self.gives_regions:
            quads = np.zeros((len(images), 4, 48), dtype=np.float32)
            for row, img in enumerate(images):
                h, w = max(img.shape[1] // 2, 1), max(img.shape[2] // 2, 1)
                for q, (y, x) in enumerate(((0, 0), (0, w), (h, 0), (h, w))):
                    part = img[:, y : y + h, x : x + w]
                    quads[row, q] = _histogram(part if part.numel() else img)
            regions = l2_normalise(quads @ self._image_proj)
        return ImageBatchVectors(
            visual=l2_normalise(hists @ self._visual_proj),
            joint=l2_normalise(hists @ self._image_proj),
            confidence=None
            if self._photo_confidence is None
            else np.full(len(images), self._photo_confidence, np.float32),
            regions=regions,
        )


def _histogram(img: torch.Tensor) -> np.ndarray:
    out = np.zeros(48, dtype=np.float32)
    for channel in range(3):
        h = torch.histc(img[channel].float(), bins=16, min=0, max=255)
        out[channel * 16 : (channel + 1) * 16] = h.numpy() / max(img[0].numel(), 1)
    return out
