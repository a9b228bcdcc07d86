"""An encoder wrapper that remembers vectors by content, so an evaluation encodes each input once.

The evaluation indexes the same corpus once per fusion method, and its photo queries are corpus
photos: with this wrapper the encoder sees each distinct text and photo a single time, and the
pipeline around it (fusion, rows, the store) still runs in full for every collection.

Keys are hashes of the input itself (the text's UTF-8 bytes, the decoded photo's shape and
pixels), scoped by the encoder's id and version. With a folder, the vectors are kept there
(``<encoder key>.npz``) so that a later run of the same encoder version reuses them; a new
model version has another key and starts empty. An encoder's output for one input does not
depend on the batch it came in (up to float rounding), which is what makes the reuse sound.

Photos' region vectors (``ImageBatchVectors.regions``), where the encoder gives them, are kept
beside, in ``<encoder key>.regions.npz`` as float16 (49 regions of 512 numbers a photo would
otherwise make the file 25 times larger); a photo cached without its regions is encoded again
when the encoder gives regions.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shopvec.encoders.base import Encoder, EncoderInfo, ImageBatchVectors, l2_normalise

__all__ = ["CachingEncoder"]

log = logging.getLogger(__name__)


def _text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _image_key(image: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(tuple(image.shape)).encode())
    digest.update(image.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class CachingEncoder:
    """Implements ``Encoder``; ``hits`` and ``misses`` count inputs served from memory or not."""

    def __init__(self, encoder: Encoder, folder: str | Path | None = None) -> None:
        self._encoder = encoder
        self._info = encoder.info
        self._path = Path(folder) / f"{self._info.key}.npz" if folder is not None else None
        self._texts: dict[str, np.ndarray] = {}
        self._images: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        """key -> (visual, joint, confidence); NaN where the encoder gives no confidence."""
        self._regions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        """key -> (regions, their confidences; NaN where the encoder gives none)."""
        self.gives_regions = bool(getattr(encoder, "gives_regions", False))
        self._dirty = False
        self.hits = 0
        self.misses = 0
        if self._path is not None and self._path.is_file():
            self._load(self._path)
            self._load_regions(self._path.with_suffix(".regions.npz"))

    @property
    def info(self) -> EncoderInfo:
        return self._info

    @property
    def inner(self) -> Encoder:
        return self._encoder

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        keys = [_text_key(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._texts))
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            vectors = self._encoder.encode_texts([texts[first[k]] for k in todo])
            self._texts.update(zip(todo, np.asarray(vectors, np.float32), strict=True))
            self._dirty = True
        self._count(len(keys), len(todo))
        if not keys:
            return np.zeros((0, self._info.joint_dim), np.float32)
        return np.stack([self._texts[k] for k in keys])

    def encode_images(self, images: Sequence[torch.Tensor]) -> ImageBatchVectors:
        keys = [_image_key(image) for image in images]
        todo = list(
            dict.fromkeys(
                k
                for k in keys
                if k not in self._images or (self.gives_regions and k not in self._regions)
            )
        )
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            got = self._encoder.encode_images([images[first[k]] for k in todo])
            for i, k in enumerate(todo):
                self._images[k] = (
                    np.asarray(got.visual[i], np.float32),
                    np.asarray(got.joint[i], np.float32),
                    float("nan") if got.confidence is None else float(got.confidence[i]),
                )
                if got.regions is not None:
                    conf = (
                        np.full(got.regions.shape[1], np.nan, np.float32)
                        if got.region_confidence is None
                        else np.asarray(got.region_confidence[i], np.float32)
                    )
                    self._regions[k] = (np.asarray(got.regions[i], np.float16), conf)
            self._dirty = True
        self._count(len(keys), len(todo))
        if not keys:
            return ImageBatchVectors(
                visual=np.zeros((0, self._info.visual_dim), np.float32),
                joint=np.zeros((0, self._info.joint_dim), np.float32),
            )
        confidence = np.asarray([self._images[k][2] for k in keys], np.float32)
        regions = region_conf = None
        if self.gives_regions:
            regions = l2_normalise(np.stack([self._regions[k][0] for k in keys]))
            rc = np.stack([self._regions[k][1] for k in keys])
            region_conf = None if np.isnan(rc).all() else np.nan_to_num(rc, nan=1.0)
        return ImageBatchVectors(
            visual=np.stack([self._images[k][0] for k in keys]),
            joint=np.stack([self._images[k][1] for k in keys]),
            confidence=None if np.isnan(confidence).all() else np.nan_to_num(confidence, nan=1.0),
            regions=regions,
            region_confidence=region_conf,
        )

    def _count(self, asked: int, encoded: int) -> None:
        self.misses += encoded
        self.hits += asked - encoded

    def save(self) -> Path | None:
        """Writes the folder's file if anything new was encoded; returns its path."""
        if self._path is None or not self._dirty:
            return self._path
        self._path.parent.mkdir(parents=True, exist_ok=True)
        text_keys = list(self._texts)
        image_keys = list(self._images)
        joint, visual = self._info.joint_dim, self._info.visual_dim
        arrays: dict[str, Any] = {
            "text_keys": np.asarray(text_keys, dtype="U32"),
            "text": np.stack([self._texts[k] for k in text_keys])
            if text_keys
            else np.zeros((0, joint), np.float32),
            "image_keys": np.asarray(image_keys, dtype="U32"),
            "visual": np.stack([self._images[k][0] for k in image_keys])
            if image_keys
            else np.zeros((0, visual), np.float32),
            "joint": np.stack([self._images[k][1] for k in image_keys])
            if image_keys
            else np.zeros((0, joint), np.float32),
            "confidence": np.asarray([self._images[k][2] for k in image_keys], np.float32),
        }
        # Write beside, then rename: a run stopped half-way never leaves a torn file.
        partial = self._path.with_name(f".{self._path.name}.{os.getpid()}.partial")
        with partial.open("wb") as handle:
            np.savez(handle, **arrays)
        partial.replace(self._path)
        if self._regions:
            region_keys = list(self._regions)
            regions_path = self._path.with_suffix(".regions.npz")
            partial = regions_path.with_name(f".{regions_path.name}.{os.getpid()}.partial")
            with partial.open("wb") as handle:
                np.savez(
                    handle,
                    keys=np.asarray(region_keys, dtype="U32"),
                    regions=np.stack([self._regions[k][0] for k in region_keys]),
                    confidence=np.stack([self._regions[k][1] for k in region_keys]),
                )
            partial.replace(regions_path)
        self._dirty = False
        return self._path

    def _load_regions(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                regions = {
                    k: (r, c)
                    for k, r, c in zip(
                        data["keys"].tolist(), data["regions"], data["confidence"], strict=True
                    )
                }
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring the unreadable region cache %s: %s", path, exc)
            return
        if any(r.ndim != 2 or r.shape[1] != self._info.joint_dim for r, _ in regions.values()):
            log.warning("ignoring the region cache %s: its dimensions do not match", path)
            return
        self._regions = regions

    def _load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                texts = dict(zip(data["text_keys"].tolist(), data["text"], strict=True))
                keys = data["image_keys"].tolist()
                confidence = (
                    data["confidence"].tolist()
                    if "confidence" in data.files
                    else [float("nan")] * len(keys)
                )
                images = {
                    k: (v, j, float(c))
                    for k, v, j, c in zip(
                        keys, data["visual"], data["joint"], confidence, strict=True
                    )
                }
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring the unreadable vector cache %s: %s", path, exc)
            return
        joint, visual = self._info.joint_dim, self._info.visual_dim
        if any(v.shape != (joint,) for v in texts.values()) or any(
            v.shape != (visual,) or j.shape != (joint,) for v, j, _ in images.values()
        ):
            log.warning("ignoring the vector cache %s: its dimensions do not match", path)
            return
        self._texts, self._images = texts, images
        log.info("vector cache %s: %d texts, %d photos", path, len(texts), len(images))
