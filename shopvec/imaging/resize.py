"""Photos fitted within a number of pixels a side, keeping their shape: one rule for every
place that shrinks one (the loader, colour words, thumbnails)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fitted_size", "shrink"]


def fitted_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The size of a height x width photo scaled to at most max_side a side (never enlarged)."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """A uint8 (3, H, W) photo at most max_side a side (antialiased bilinear, uint8 to uint8),
    or the photo itself when it already is."""
    _, h, w = image.shape
    size = fitted_size(h, w, max_side)
    if size == (h, w):
        return image
    return F.interpolate(image.unsqueeze(0), size=size, mode="bilinear", antialias=True)[0]
