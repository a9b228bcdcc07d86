"""Colour words from a product photo's pixels, for the words the encoders cannot give.

The ImageNet classifier behind the offline encoder names objects, never their colour, so "red
dress" cannot find a red dress that has no words. This module finds the product region and
names its dominant colours with a fixed palette, in English and Chinese ("red 红色").

The product region: catalogue photos put the product on a plain background, so the colour of
the border (its median) is taken as the background, and the pixels far from it in CIELAB are
the product. When that leaves too few pixels (a white shirt on white), the central part of the
photo stands in for the product. Each product pixel takes the name of the nearest palette
colour; names holding at least `min_share` of the region are reported, the largest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PALETTE", "ColourName", "colour_names", "colour_words"]


@dataclass(frozen=True)
class ColourName:
    english: str
    chinese: str

    @property
    def words(self) -> str:
        return f"{self.english} {self.chinese}"


# Each name with one or more sRGB references (shades of it that photos show); a pixel takes the
# name of its nearest reference in CIELAB.
_REFERENCES: tuple[tuple[str, str, tuple[tuple[int, int, int], ...]], ...] = (
    ("black", "黑色", ((20, 20, 20),)),
    ("white", "白色", ((245, 245, 245),)),
    ("grey", "灰色", ((128, 128, 128),)),
    ("red", "红色", ((200, 30, 40), (160, 20, 30), (230, 60, 60))),
    ("maroon", "栗色", ((110, 20, 35),)),
    ("pink", "粉色", ((240, 150, 180), (220, 90, 140), (250, 200, 210))),
    ("orange", "橙色", ((240, 130, 30), (220, 100, 40))),
    ("yellow", "黄色", ((245, 210, 40), (230, 230, 80))),
    ("beige", "米色", ((220, 200, 165), (200, 180, 145))),
    ("brown", "棕色", ((120, 75, 40), (150, 100, 60), (85, 55, 35))),
    ("olive", "橄榄色", ((110, 110, 50),)),
    ("green", "绿色", ((40, 150, 60), (30, 100, 50), (120, 190, 100))),
    ("teal", "青色", ((0, 128, 128), (40, 160, 160))),
    (
        "blue",
        "蓝色",
        ((40, 90, 200), (90, 140, 210), (60, 110, 160), (165, 195, 230), (80, 100, 130)),
    ),
    ("navy blue", "藏青色", ((25, 35, 80), (35, 45, 100))),
    ("purple", "紫色", ((120, 50, 150), (160, 100, 190))),
)

PALETTE: tuple[ColourName, ...] = tuple(ColourName(en, zh) for en, zh, _ in _REFERENCES)

# Skin: catalogue photos often show the product worn. Pixels nearest these belong to no
# product colour and leave the region.
_SKIN: tuple[tuple[int, int, int], ...] = ((228, 185, 155), (205, 150, 120), (165, 115, 85))


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """rgb: (..., 3) in 0..1; CIELAB under D65."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


_REF_LAB = _srgb_to_lab(
    np.array([*(rgb for _, _, refs in _REFERENCES for rgb in refs), *_SKIN], np.float64) / 255.0
)
_REF_SQUARED = (_REF_LAB**2).sum(axis=1)
_REF_NAME = np.array(
    [*(i for i, (_, _, refs) in enumerate(_REFERENCES) for _ in refs), *[-1] * len(_SKIN)]
)


def _small(image: torch.Tensor, max_side: int) -> np.ndarray:
    """uint8 (3, H, W) to float (h, w, 3) in 0..1, at most max_side pixels a side."""
    _, h, w = image.shape
    x = image[:3].float().unsqueeze(0) / 255.0
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="area")
    return x[0].permute(1, 2, 0).numpy().astype(np.float64)


def _product_mask(lab: np.ndarray, background_distance: float, min_region: float) -> np.ndarray:
    h, w, _ = lab.shape
    band = max(1, min(h, w) // 16)
    border = np.concatenate(
        [
            lab[:band].reshape(-1, 3),
            lab[-band:].reshape(-1, 3),
            lab[:, :band].reshape(-1, 3),
            lab[:, -band:].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    mask = np.linalg.norm(lab - background, axis=-1) > background_distance
    if mask.mean() >= min_region:
        return mask
    # Too little stands out from the border: the product is (nearly) the background's colour,
    # or fills the frame. The middle of the photo is then the best guess of where it is.
    centre = np.zeros((h, w), dtype=bool)
    centre[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    return centre


def _nearest_names(pixels: np.ndarray) -> np.ndarray:
    """(n, 3) CIELAB pixels: the palette index of each one's nearest reference (-1: skin)."""
    # |p - r|^2 = |p|^2 - 2 p.r + |r|^2, and |p|^2 is the same for every reference of a
    # pixel: the nearest is the argmin of |r|^2 - 2 p.r, one small matrix product.
    scores = _REF_SQUARED - 2.0 * (pixels @ _REF_LAB.T)
    return _REF_NAME[np.argmin(scores, axis=1)]


def colour_names(
    image: torch.Tensor,
    *,
    max_colours: int = 2,
    min_share: float = 0.2,
    background_distance: float = 12.0,
    min_region: float = 0.04,
    max_side: int = 64,
) -> list[ColourName]:
    """The dominant palette colours of the product in a uint8 (3, H, W) photo, largest first."""
    if image.ndim != 3 or image.shape[0] < 3 or image.shape[1] == 0 or image.shape[2] == 0:
        return []
    lab = _srgb_to_lab(_small(image, max_side))
    mask = _product_mask(lab, background_distance, min_region)
    names = _nearest_names(lab[mask])
    # The product is usually in the middle of the frame: nearer pixels count for more.
    h, w, _ = lab.shape
    ys, xs = np.nonzero(mask)
    weights = np.exp(-(((ys + 0.5) / h - 0.5) ** 2 + ((xs + 0.5) / w - 0.5) ** 2) / (2 * 0.3**2))
    kept = names >= 0
    if not kept.any():
        return []
    shares = np.bincount(names[kept], weights[kept], minlength=len(PALETTE))
    shares = shares / shares.sum()
    order = np.argsort(-shares, kind="stable")
    return [PALETTE[i] for i in order[:max_colours] if shares[i] >= min_share]


def colour_words(images: Sequence[torch.Tensor]) -> str:
    """The colour words of a product's photos, each name once: "red 红色 white 白色"."""
    seen: dict[str, ColourName] = {}
    for image in images:
        for name in colour_names(image):
            seen.setdefault(name.english, name)
    return " ".join(name.words for name in seen.values())
