"""Small JPEG thumbnails as data: URIs, so a results page can show products sent inline."""

from __future__ import annotations

import base64

import torch
import torch.nn.functional as F
from torchvision.io import encode_jpeg

__all__ = ["thumbnail_data_uri"]


def thumbnail_data_uri(image: torch.Tensor, max_side: int = 96, quality: int = 70) -> str:
    """image: uint8 (3, H, W). A 96-pixel JPEG is a few kilobytes."""
    _, h, w = image.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = (
            F.interpolate(image.unsqueeze(0).float(), size=size, mode="bilinear", antialias=True)
            .round()
            .clamp(0, 255)
            .to(torch.uint8)[0]
        )
    data = encode_jpeg(image.contiguous(), quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(data.numpy().tobytes()).decode()
