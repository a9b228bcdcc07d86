"""Small JPEG thumbnails as data: URIs, so a results page can show products sent inline."""

from __future__ import annotations

import base64

import torch
from torchvision.io import encode_jpeg

from shopvec.imaging.resize import shrink

__all__ = ["thumbnail_data_uri"]


def thumbnail_data_uri(image: torch.Tensor, max_side: int = 96, quality: int = 70) -> str:
    """image: uint8 (3, H, W). A 96-pixel JPEG is a few kilobytes."""
    data = encode_jpeg(shrink(image, max_side).contiguous(), quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(data.numpy().tobytes()).decode()
