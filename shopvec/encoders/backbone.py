"""The photo-to-photo backbone: a torchvision ImageNet classifier without its head.

Image-only: the pooled features before the classifier, L2-normalised, after the architecture's
standard ImageNet preprocessing. Weights come from a local state_dict file, or from the torch
hub cache when none is given; nothing is downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from shopvec.encoders._torch import batch_slices, check_images, content_hash, resolve_device
from shopvec.encoders.base import l2_normalise

__all__ = ["TorchvisionBackbone"]

log = logging.getLogger(__name__)

# Bump when this module's preprocessing changes, so vectors made before get another version.
_PIPELINE_REVISION = "1"

# Where torchvision keeps each family's classifier.
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")

# Auxiliary classifiers only run in training; checkpoints may or may not carry them.
_AUXILIARY_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")

# torchvision builds these with transform_input=True whenever it loads ImageNet weights: the
# weights expect that extra renormalisation inside the model.
_ARCH_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"transform_input": True},
    "inception_v3": {"transform_input": True},
}


class TorchvisionBackbone:
    """Decoded uint8 RGB tensors (3, H, W) of any size in, unit (n, dim) float32 rows out."""

    def __init__(
        self,
        arch: str,
        weights_path: str | None,
        device: str = "auto",
        batch_size: int = 32,
    ) -> None:
        import torchvision
        from torchvision.models import get_model, get_model_weights, list_models

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        # Only the classification models: detection and segmentation ones have no pooled head.
        if arch not in list_models(module=torchvision.models):
            raise ValueError(f"{arch!r} is not a torchvision classification model")
        reference = get_model_weights(arch).DEFAULT
        path = Path(weights_path).expanduser() if weights_path else _hub_cached(reference)

        model = get_model(arch, weights=None, **_ARCH_KWARGS.get(arch, {}))
        head = _drop_head(model, arch)
        _load_weights(model, path, head)

        self._device = resolve_device(device)
        self._model = model.eval().requires_grad_(False).to(self._device)
        self._transforms = reference.transforms()
        self._batch_size = batch_size
        self.model_id = f"torchvision:{arch}"
        self.version = content_hash(
            [path], extra=f"rev={_PIPELINE_REVISION};{arch};{self._transforms!r}"
        )
        crop = int(self._transforms.crop_size[0])
        self.dim = int(self._features([torch.zeros((3, crop, crop), dtype=torch.uint8)]).shape[1])
        log.info(
            "loaded %s from %s version %s on %s: dim %d",
            self.model_id,
            path,
            self.version,
            self._device,
            self.dim,
        )

    @property
    def device(self) -> torch.device:
        return self._device

    def encode(self, images: Sequence[torch.Tensor]) -> np.ndarray:
        checked = check_images(images)
        out = np.empty((len(checked), self.dim), dtype=np.float32)
        for part in batch_slices(len(checked), self._batch_size):
            out[part] = self._features(checked[part])
        return out

    def _features(self, images: list[torch.Tensor]) -> np.ndarray:
        # Resize and crop per image on the CPU (sizes differ), then one batch on the device.
        batch = torch.stack([self._transforms(image.cpu()) for image in images])
        with torch.inference_mode():
            features = self._model(batch.to(self._device)).flatten(1)
        return l2_normalise(features.float().cpu().numpy())


def _hub_cached(weights: Any) -> Path:
    """torchvision's own download location for its reference weights, if already there."""
    name = Path(urlparse(weights.url).path).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"no weights_path given and {weights} is not in the torch hub cache at {path} "
            "(this loader never downloads: fetch it beforehand or pass weights_path)"
        )
    return path


def _drop_head(model: nn.Module, arch: str) -> str:
    """Replace the last linear layer of the classifier with Identity; return its name."""
    for attribute in _HEAD_ATTRIBUTES:
        module = getattr(model, attribute, None)
        if isinstance(module, nn.Linear):
            setattr(model, attribute, nn.Identity())
            return attribute
        if isinstance(module, nn.Sequential):
            linears = [
                name for name, child in module.named_children() if isinstance(child, nn.Linear)
            ]
            if linears:
                setattr(module, linears[-1], nn.Identity())
                return f"{attribute}.{linears[-1]}"
    raise ValueError(f"{arch}: no linear classifier head to remove")


def _load_weights(model: nn.Module, path: Path, head: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, got {type(state).__name__}")
    # Saved from a DataParallel or DistributedDataParallel wrapper.
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    # The head is dropped anyway, so a checkpoint fine-tuned on other classes loads too.
    ignored = (f"{head}.", *_AUXILIARY_PREFIXES)
    state = {key: value for key, value in state.items() if not key.startswith(ignored)}
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(ignored)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit this architecture: missing {missing[:5]} "
            f"unexpected {result.unexpected_keys[:5]}"
        )
