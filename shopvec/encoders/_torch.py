"""Torch plumbing the encoders share: device and dtype choice, input checks, content hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

__all__ = [
    "batch_slices",
    "check_images",
    "content_hash",
    "resolve_device",
    "resolve_dtype",
    "set_threads",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    # Fail at start-up, not on the first batch.
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return resolved


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {name!r}") from None


def set_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads; the setting is process-wide."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def check_images(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The protocol's image contract: uint8 RGB tensors of shape (3, H, W), any size."""
    checked = list(images)
    for i, image in enumerate(checked):
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"image {i}: expected a torch.Tensor, got {type(image).__name__}")
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"image {i}: expected a uint8 tensor of shape (3, H, W), "
                f"got {image.dtype} {tuple(image.shape)}"
            )
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"image {i}: empty image {tuple(image.shape)}")
    return checked


def content_hash(files: Iterable[Path], *, root: Path | None = None, extra: str = "") -> str:
    """A short digest of the files' bytes, plus ``extra`` (settings that change the vectors).

    With ``root``, each file's path below it counts too (a checkpoint folder); without, only
    the bytes do, so a renamed weights file keeps its version. Bytes rather than sizes or
    times, so that a copied checkpoint keeps its version and an edited one does not.
    """
    digest = hashlib.sha256(extra.encode())
    for path in sorted(files):
        name = path.relative_to(root).as_posix() if root is not None else ""
        digest.update(f"\0{name}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]
