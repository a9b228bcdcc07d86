"""The encoder interface: a batch in, L2-normalised float32 vectors out.

An encoder maps texts and images into one *joint* space (text queries meet product photos
there) and maps images into a *visual* space for photo-to-photo search. For CLIP-family
models the two image spaces are the same; for the offline default they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["Encoder", "EncoderInfo", "ImageBatchVectors", "l2_normalise"]


@dataclass(frozen=True)
class EncoderInfo:
    model_id: str
    """What produced the vectors, e.g. "offline:efficientnet-lite0+use-m3" or a checkpoint name."""
    version: str
    """Changes whenever the same input would give other vectors (weights, preprocessing)."""
    joint_dim: int
    visual_dim: int

    @property
    def key(self) -> str:
        """A short name that is safe in a Milvus collection name."""
        raw = f"{self.model_id}-{self.version}".lower()
        return "".join(ch if ch.isalnum() else "_" for ch in raw)[:120]


@dataclass(frozen=True)
class ImageBatchVectors:
    visual: np.ndarray
    """(n, visual_dim) float32, unit rows: for photo-to-photo similarity."""
    joint: np.ndarray
    """(n, joint_dim) float32, unit rows: comparable with encode_texts output."""
    confidence: np.ndarray | None = None
    """(n,) float32 in [0, 1]: how far each joint vector can be trusted to say what its photo
    shows, for encoders whose photos reach the words' space by an estimate (the offline
    default's ConSE); fusion scales a photo's weight by it. None: fully, as for models trained
    to align photos with words (the CLIP family)."""
    regions: np.ndarray | None = None
    """(n, r, joint_dim) float32, unit rows: each photo's regions in the joint space (the cells
    of the photo model's last feature map, or a ViT's patch tokens), for attention fusion; None
    where the encoder gives none."""
    region_confidence: np.ndarray | None = None
    """(n, r) float32 in [0, 1]: the confidence of each region's joint vector, as
    ``confidence`` is the photo's; None: fully."""


@runtime_checkable
class Encoder(Protocol):
    """Images come in as decoded uint8 RGB tensors of shape (3, H, W), any size."""

    @property
    def info(self) -> EncoderInfo: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, joint_dim) float32 with unit rows, in input order."""
        ...

    def encode_images(self, images: Sequence[torch.Tensor]) -> ImageBatchVectors: ...


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32, copy=False)
