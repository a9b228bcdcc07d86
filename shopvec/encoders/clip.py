"""The CLIP-family encoder: one transformers checkpoint that puts texts and images in one space.

Loads CLIP, Chinese-CLIP, SigLIP, or any other checkpoint whose model offers
``get_text_features`` and ``get_image_features``, strictly from local files (a folder or the
hub cache). The checkpoint's own tokenizer and image processor do the preprocessing, so the
vectors match what the model was trained on.

Regions: for checkpoints with a ViT image tower and a visual projection (CLIP, Chinese-CLIP),
each patch token of the last layer goes through the tower's final layer norm and the
projection, as the class token does to become the photo's vector, so the patches land in the
joint space (the route MaskCLIP takes); attention fusion lets the words attend over them. The
tower runs once for both. SigLIP pools its patches with an attention head of its own and
has no such projection: its photos come without regions.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shopvec.encoders._torch import (
    batch_slices,
    check_images,
    content_hash,
    resolve_device,
    resolve_dtype,
    set_threads,
)
from shopvec.encoders.base import EncoderInfo, ImageBatchVectors, l2_normalise

__all__ = ["ClipFamilyEncoder"]

log = logging.getLogger(__name__)

# Bump when this module's preprocessing changes, so vectors made before get another version.
_PIPELINE_REVISION = "1"

# What from_pretrained reads, and so what the version must cover. Other frameworks' weights
# (tf_model.h5, flax_model.msgpack, onnx/) are left out: they are never loaded here.
_CONFIG_FILES = frozenset(
    {
        "config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
    }
)
_SENTENCEPIECE_SUFFIX = ".model"  # spiece.model, sentencepiece.bpe.model

_NO_LIMIT = 100_000  # tokenizers without a limit report model_max_length as 1e30


class ClipFamilyEncoder:
    """Texts and images into the checkpoint's projection space; visual == joint here.

    Safe to share between threads: calls run one at a time, because a fast tokenizer changes
    its padding and truncation state on every call and fails when two calls overlap.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        *,
        model_id: str,
        version: str,
        device: torch.device,
        batch_size: int = 32,
        text_max_length: int,
        pad_to_max_length: bool = False,
        regions: bool = True,
    ) -> None:
        """regions: also give each photo's patch tokens in the joint space, where the
        checkpoint has them (for attention fusion; a query needs none)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        for method in ("get_text_features", "get_image_features"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"{type(model).__name__} has no {method}: not a CLIP-family model")
        self._model = model.eval().requires_grad_(False)
        self._lock = threading.Lock()
        self._tokenizer = tokenizer
        self._image_processor = image_processor
        self._device = device
        self._dtype = next(model.parameters()).dtype
        self._batch_size = batch_size
        self._text_max_length = text_max_length
        # SigLIP was trained on texts padded to the full length and pools the last position.
        self._padding: str | bool = "max_length" if pad_to_max_length else True
        self._text_args = _named_parameters(model.get_text_features)
        self._image_args = _named_parameters(model.get_image_features)
        vision = getattr(model, "vision_model", None)
        self.gives_regions = (
            regions
            and callable(getattr(model, "visual_projection", None))
            and vision is not None
            and callable(getattr(vision, "post_layernorm", None))
            and "pixel_values" in self._image_args
        )
        joint_dim = self._probe_dim()
        self._info = EncoderInfo(
            model_id=model_id, version=version, joint_dim=joint_dim, visual_dim=joint_dim
        )

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str,
        *,
        device: str = "auto",
        dtype: str = "float32",
        threads: int | None = None,
        batch_size: int = 32,
        cache_dir: str | None = None,
        regions: bool = True,
    ) -> ClipFamilyEncoder:
        """Load from a local folder, or a hub id already in the hub cache; never downloads.

        ``cache_dir`` overrides the hub cache location (default: huggingface_hub's own).
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        set_threads(threads)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype)
        if torch_device.type == "cpu" and torch_dtype == torch.float16:
            log.warning("float16 on the CPU is slow and some kernels lack it; consider bfloat16")

        folder, model_id = _resolve_checkpoint(path_or_id, cache_dir)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        model_class = _model_class(config.model_type)
        model = model_class.from_pretrained(folder, local_files_only=True)
        # Cast after loading rather than through from_pretrained's dtype argument, whose name
        # differs between transformers 4.x and 5.x.
        model = model.to(device=torch_device, dtype=torch_dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (ImportError, ValueError, OSError) as exc:
            hint = ""
            if not (folder / "tokenizer.json").exists():
                # SigLIP repositories may ship only spiece.model, which needs the
                # sentencepiece package; a tokenizer.json saved beside it does not.
                hint = " (the folder has no tokenizer.json; save one with the tokenizer)"
            raise RuntimeError(f"cannot load the tokenizer of {model_id}{hint}: {exc}") from exc
        image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)

        text_config = getattr(config, "text_config", config)
        max_length = _text_max_length(tokenizer, text_config)
        pad_to_max_length = config.model_type.startswith("siglip")
        pipeline = f"rev={_PIPELINE_REVISION};max_length={max_length};pad={pad_to_max_length}"
        version = content_hash(_checkpoint_files(folder), root=folder, extra=pipeline)

        encoder = cls(
            model,
            tokenizer,
            image_processor,
            model_id=model_id,
            version=version,
            device=torch_device,
            batch_size=batch_size,
            text_max_length=max_length,
            pad_to_max_length=pad_to_max_length,
            regions=regions,
        )
        log.info(
            "loaded %s (%s) version %s on %s as %s: dim %d, text max length %d",
            model_id,
            config.model_type,
            version,
            torch_device,
            dtype,
            encoder.info.joint_dim,
            max_length,
        )
        return encoder

    @property
    def info(self) -> EncoderInfo:
        return self._info

    @property
    def device(self) -> torch.device:
        return self._device

    def warm_up(self) -> None:
        """One full batch of blank photos and one of texts through the model now, as the
        offline encoder does, so that the first batch of events or requests does not pay for
        the allocator and the kernels meeting that batch size."""
        blank = torch.zeros((3, 224, 224), dtype=torch.uint8)
        self.encode_images([blank] * self._batch_size)
        self.encode_texts(["a"] * self._batch_size)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self._info.joint_dim), dtype=np.float32)
        # Longest first, as sentence-transformers does: batches of like lengths pad little,
        # and a batch that runs out of memory does so at once.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        with self._lock:
            for part in batch_slices(len(texts), self._batch_size):
                rows = order[part]
                out[rows] = self._text_features([texts[i] for i in rows])
        return out

    def encode_images(self, images: Sequence[torch.Tensor]) -> ImageBatchVectors:
        checked = check_images(images)
        out = np.empty((len(checked), self._info.joint_dim), dtype=np.float32)
        regions: list[np.ndarray] = []
        with self._lock:
            for part in batch_slices(len(checked), self._batch_size):
                out[part], patches = self._image_features_and_regions(checked[part])
                if patches is not None:
                    regions.append(patches)
        stacked = None
        if self.gives_regions:
            stacked = (
                np.concatenate(regions)
                if regions
                else np.zeros((0, 0, self._info.joint_dim), np.float32)
            )
        return ImageBatchVectors(visual=out, joint=out, regions=stacked)

    def _text_features(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer(
            texts,
            padding=self._padding,
            truncation=True,
            max_length=self._text_max_length,
            return_tensors="pt",
        )
        inputs = self._model_inputs(encoded, self._text_args)
        with torch.inference_mode():
            features = _features_tensor(self._model.get_text_features(**inputs))
        return l2_normalise(features.float().cpu().numpy())

    def _image_features(self, images: list[torch.Tensor]) -> np.ndarray:
        return self._image_features_and_regions(images)[0]

    def _image_features_and_regions(
        self, images: list[torch.Tensor]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        # The processor's resize, crop, rescale and normalise run on the CPU: the inputs are
        # decoded there, and the checkpoint's own processor is the reference preprocessing.
        processed = self._image_processor(
            images=[image.cpu() for image in images],
            return_tensors="pt",
            input_data_format="channels_first",
        )
        inputs = self._model_inputs(processed, self._image_args)
        with torch.inference_mode():
            if not self.gives_regions:
                features = _features_tensor(self._model.get_image_features(**inputs))
                return l2_normalise(features.float().cpu().numpy()), None
            # What get_image_features does (the class token, normed, projected), with the
            # patch tokens taken the same way from the same pass.
            tower = self._model.vision_model(pixel_values=inputs["pixel_values"])
            features = self._model.visual_projection(tower.pooler_output)
            patches = self._model.visual_projection(
                self._model.vision_model.post_layernorm(tower.last_hidden_state[:, 1:])
            )
        return (
            l2_normalise(features.float().cpu().numpy()),
            l2_normalise(patches.float().cpu().numpy()),
        )

    def _model_inputs(
        self, encoded: Mapping[str, Any], accepted: frozenset[str]
    ) -> dict[str, torch.Tensor]:
        # Tokenizers and processors may return more than the feature method takes (a BERT
        # tokenizer's token_type_ids beside a model without them, say); pass what it names.
        inputs = {}
        for name, value in encoded.items():
            if name not in accepted or not isinstance(value, torch.Tensor):
                continue
            if value.is_floating_point():
                value = value.to(dtype=self._dtype)
            inputs[name] = value.to(self._device)
        return inputs

    def _probe_dim(self) -> int:
        text_dim = self._text_features(["a"]).shape[1]
        image_dim = self._image_features([torch.zeros((3, 64, 64), dtype=torch.uint8)]).shape[1]
        if text_dim != image_dim:
            raise ValueError(
                f"text features have {text_dim} dimensions but image features {image_dim}: "
                "the checkpoint has no joint space"
            )
        return int(text_dim)


def _resolve_checkpoint(path_or_id: str, cache_dir: str | None) -> tuple[Path, str]:
    """The folder to load from and the name to report: a folder's own name, or the hub id."""
    local = Path(path_or_id).expanduser()
    if local.is_dir():
        # abspath rather than resolve: a link to a hub snapshot keeps its own name.
        folder = Path(os.path.abspath(local))
        return folder, folder.name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(path_or_id, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError) as exc:
        raise FileNotFoundError(
            f"{path_or_id!r} is neither a folder nor a model in the hub cache "
            "(this loader never downloads: fetch it beforehand)"
        ) from exc
    return Path(str(snapshot)), path_or_id


def _model_class(model_type: str) -> Any:
    import transformers

    named = {
        "clip": "CLIPModel",
        "chinese_clip": "ChineseCLIPModel",
        "siglip": "SiglipModel",
    }
    return getattr(transformers, named.get(model_type, "AutoModel"))


def _checkpoint_files(folder: Path) -> list[Path]:
    files = [path for path in folder.iterdir() if path.is_file()]
    configs = [
        path
        for path in files
        if path.name in _CONFIG_FILES or path.name.endswith(_SENTENCEPIECE_SUFFIX)
    ]
    # transformers prefers safetensors and ignores .bin files beside them.
    weights = [path for path in files if path.name.endswith(".safetensors")]
    if weights:
        weights += [path for path in files if path.name == "model.safetensors.index.json"]
    else:
        weights = [
            path
            for path in files
            if path.name.startswith("pytorch_model")
            and (path.name.endswith(".bin") or path.name.endswith(".bin.index.json"))
        ]
    if not weights:
        raise FileNotFoundError(f"no weights (*.safetensors or pytorch_model*.bin) in {folder}")
    return configs + weights


def _text_max_length(tokenizer: Any, text_config: Any) -> int:
    limits = [
        getattr(text_config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    valid = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < _NO_LIMIT]
    if not valid:
        raise ValueError("neither the text config nor the tokenizer gives a maximum text length")
    return min(valid)


def _named_parameters(method: Callable[..., Any]) -> frozenset[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(
        name for name, p in inspect.signature(method).parameters.items() if p.kind in kinds
    )


def _features_tensor(output: Any) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x a model output holding them."""
    if isinstance(output, torch.Tensor):
        features = output
    else:
        for name in ("text_embeds", "image_embeds", "pooler_output"):
            value = getattr(output, name, None)
            if isinstance(value, torch.Tensor):
                features = value
                break
        else:
            raise TypeError(f"no feature tensor in {type(output).__name__}")
    if features.ndim != 2:
        raise ValueError(f"expected (batch, dim) features, got shape {tuple(features.shape)}")
    return features
