"""A light alignment of photos to words, fitted on a catalogue's own photo-title pairs.

The encoders stay frozen. A linear head maps a photo's two vectors, visual and joint, side by
side, into the joint (words) space. It starts as the identity on the joint part and zero on the
visual part, so an unfitted head changes nothing; fitting moves it with a symmetric InfoNCE
loss (CLIP's objective) between the mapped photos and their titles' vectors, and stops at the
epoch with the lowest loss on a slice of the pairs held out from the gradient steps. The words'
vectors are the targets and stay as they are, so text vectors (and queries) are unchanged; only
the photos' joint vectors move.

``AlignedEncoder`` wraps an encoder with a fitted head; its version carries the head's version,
so vectors made with and without it never share a collection.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shopvec.encoders.base import Encoder, EncoderInfo, ImageBatchVectors, l2_normalise

__all__ = [
    "AlignedEncoder",
    "Alignment",
    "AlignmentConfig",
    "FitReport",
    "fit_alignment",
    "load_alignment",
]

_FORMAT = 1


@dataclass(frozen=True)
class AlignmentConfig:
    """Fitting settings. The defaults are textbook values, not tuned to any catalogue."""

    epochs: int = 100
    patience: int = 10
    """Epochs without a better validation loss before fitting stops."""
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    """Pulls the head toward its starting point (the unaligned encoder), not toward zero."""
    temperature: float = 0.07
    """CLIP's initial temperature."""
    batch_size: int = 256
    validation: float = 0.1
    """Share of the fit pairs kept out of the gradient steps, for early stopping."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.validation < 1:
            raise ValueError(f"validation must be in (0, 1), not {self.validation}")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 2:
            raise ValueError("epochs and patience must be >= 1, batch_size >= 2")
        if self.temperature <= 0 or self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("temperature and learning_rate must be > 0, weight_decay >= 0")


@dataclass(frozen=True)
class Alignment:
    """The fitted head: ``joint' = normalise(weight @ [visual, joint])``."""

    weight: np.ndarray
    """(joint_dim, visual_dim + joint_dim) float32."""
    base_model_id: str
    base_version: str
    config: AlignmentConfig
    fit: dict[str, Any] = field(default_factory=dict)
    """What the fit saw and reached (pairs, epochs, losses); not part of the version."""

    @property
    def joint_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def visual_dim(self) -> int:
        return int(self.weight.shape[1]) - self.joint_dim

    @property
    def version(self) -> str:
        """A digest of the weights, the settings and the encoder they were fitted on."""
        digest = hashlib.sha256(f"format={_FORMAT}".encode())
        digest.update(json.dumps(asdict(self.config), sort_keys=True).encode())
        digest.update(f"\0{self.base_model_id}\0{self.base_version}\0".encode())
        digest.update(np.ascontiguousarray(self.weight, dtype=np.float32).tobytes())
        return digest.hexdigest()[:12]

    def apply(self, visual: np.ndarray, joint: np.ndarray) -> np.ndarray:
        """(n, visual_dim) and (n, joint_dim) unit rows in, (n, joint_dim) unit rows out."""
        x = np.concatenate([np.asarray(visual, np.float32), np.asarray(joint, np.float32)], axis=1)
        return l2_normalise(x @ self.weight.T)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "version": self.version,
            "base_model_id": self.base_model_id,
            "base_version": self.base_version,
            "config": asdict(self.config),
            "fit": self.fit,
            "weight": torch.from_numpy(np.ascontiguousarray(self.weight, dtype=np.float32)),
        }
        torch.save(payload, path)
        return path


def load_alignment(path: str | Path) -> Alignment:
    """Reads a saved head; refuses a file whose weights no longer match its version."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a shopvec alignment file (format {_FORMAT})")
    alignment = Alignment(
        weight=payload["weight"].numpy().astype(np.float32),
        base_model_id=str(payload["base_model_id"]),
        base_version=str(payload["base_version"]),
        config=AlignmentConfig(**payload["config"]),
        fit=dict(payload.get("fit") or {}),
    )
    if alignment.version != payload.get("version"):
        raise ValueError(f"{path}: its weights do not match its recorded version")
    return alignment


@dataclass(frozen=True)
class FitReport:
    alignment: Alignment
    pairs: int
    validation_pairs: int
    epochs: int
    """Epochs run (early stopping included)."""
    best_epoch: int
    """The epoch whose head was kept; 0 means the unfitted head was best."""
    validation_loss_before: float
    validation_loss_after: float


def _info_nce(images: torch.Tensor, texts: torch.Tensor, temperature: float) -> torch.Tensor:
    images = torch.nn.functional.normalize(images, dim=1)
    logits = images @ texts.T / temperature
    labels = torch.arange(len(images))
    return (
        torch.nn.functional.cross_entropy(logits, labels)
        + torch.nn.functional.cross_entropy(logits.T, labels)
    ) / 2


def fit_alignment(
    visual: np.ndarray,
    joint: np.ndarray,
    texts: np.ndarray,
    *,
    base: EncoderInfo,
    config: AlignmentConfig | None = None,
) -> FitReport:
    """Fits the head on pairs: row i of ``visual`` and ``joint`` is the photo of title ``texts[i]``.

    All three are unit rows from the frozen encoder ``base``. Runs on the CPU in seconds.
    """
    config = config or AlignmentConfig()
    # The matrices are small: several threads only wait on each other (on a busy machine, by
    # more than an order of magnitude), so the fit runs on one and gives the rest back after.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(visual, joint, texts, base, config)
    finally:
        torch.set_num_threads(threads)


def _fit(
    visual: np.ndarray,
    joint: np.ndarray,
    texts: np.ndarray,
    base: EncoderInfo,
    config: AlignmentConfig,
) -> FitReport:
    n = len(texts)
    if not len(visual) == len(joint) == n:
        raise ValueError("visual, joint and texts need one row per pair")
    n_val = max(2, round(n * config.validation))
    if n - n_val < 2:
        raise ValueError(f"{n} pairs are too few to fit and validate on")
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=generator)
    x = torch.from_numpy(np.concatenate([visual, joint], axis=1).astype(np.float32))
    y = torch.from_numpy(np.asarray(texts, np.float32))
    train, val = order[n_val:], order[:n_val]

    joint_dim, in_dim = y.shape[1], x.shape[1]
    start = torch.zeros((joint_dim, in_dim))
    start[:, in_dim - joint_dim :] = torch.eye(joint_dim)
    weight = torch.nn.Parameter(start.clone())
    optimiser = torch.optim.Adam([weight], lr=config.learning_rate)

    def val_loss() -> float:
        with torch.no_grad():
            return float(_info_nce(x[val] @ weight.T, y[val], config.temperature))

    before = best = val_loss()
    best_weight, best_epoch, stale, epoch = weight.detach().clone(), 0, 0, 0
    steps = math.ceil(len(train) / config.batch_size)
    for epoch in range(1, config.epochs + 1):
        shuffled = train[torch.randperm(len(train), generator=generator)]
        for step in range(steps):
            rows = shuffled[step * config.batch_size : (step + 1) * config.batch_size]
            if len(rows) < 2:
                continue
            loss = _info_nce(x[rows] @ weight.T, y[rows], config.temperature)
            loss = loss + config.weight_decay * (weight - start).pow(2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        current = val_loss()
        if current < best:
            best, best_weight, best_epoch, stale = current, weight.detach().clone(), epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break

    alignment = Alignment(
        weight=best_weight.numpy().astype(np.float32),
        base_model_id=base.model_id,
        base_version=base.version,
        config=config,
        fit={
            "pairs": n,
            "validation_pairs": n_val,
            "epochs": epoch,
            "best_epoch": best_epoch,
            "validation_loss_before": before,
            "validation_loss_after": best,
        },
    )
    return FitReport(alignment, n, n_val, epoch, best_epoch, before, best)


class AlignedEncoder:
    """An encoder whose photos' joint vectors go through a fitted head; texts pass through."""

    def __init__(self, encoder: Encoder, alignment: Alignment) -> None:
        info = encoder.info
        if (info.model_id, info.version) != (alignment.base_model_id, alignment.base_version):
            raise ValueError(
                f"the alignment {alignment.version} was fitted on {alignment.base_model_id} "
                f"version {alignment.base_version}, not on {info.model_id} version {info.version}"
            )
        if (info.joint_dim, info.visual_dim) != (alignment.joint_dim, alignment.visual_dim):
            raise ValueError("the alignment's dimensions do not match the encoder's")
        self._encoder = encoder
        self._alignment = alignment
        self._info = EncoderInfo(
            model_id=f"{info.model_id}+align",
            version=f"{info.version}.a{alignment.version}",
            joint_dim=info.joint_dim,
            visual_dim=info.visual_dim,
        )

    @property
    def info(self) -> EncoderInfo:
        return self._info

    @property
    def alignment(self) -> Alignment:
        return self._alignment

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encoder.encode_texts(texts)

    def encode_images(self, images: Sequence[torch.Tensor]) -> ImageBatchVectors:
        vectors = self._encoder.encode_images(images)
        if len(vectors.visual) == 0:
            return vectors
        # The head is a mapping learned on the catalogue's own pairs, not the base encoder's
        # estimate, so the base's confidence in that estimate does not carry over.
        return ImageBatchVectors(
            visual=vectors.visual, joint=self._alignment.apply(vectors.visual, vectors.joint)
        )

    def warm_up(self) -> None:
        warm = getattr(self._encoder, "warm_up", None)
        if callable(warm):
            warm()
