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

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shopvec.imaging.resize import fitted_size

__all__ = [
    "PALETTE",
    "ColourName",
    "colour_names",
    "colour_words",
    "colour_words_many",
    "warm_up",
]


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


_LEVELS = 64
"""Each channel of a (shrunk) photo is rounded to one of 64 levels before it is looked up: a
pixel's CIELAB value and nearest name then come from one table of 64^3 colours, built once,
instead of a colour conversion and a nearest-reference search for every pixel of every photo.
The rounding moves a colour by at most 1/126 of the channel's range."""


@functools.cache
def _table() -> tuple[np.ndarray, np.ndarray]:
    """CIELAB (float32) and palette index (-1: skin) of every colour of the 64-level grid."""
    levels = np.arange(_LEVELS) / (_LEVELS - 1)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = _srgb_to_lab(grid)
    return lab.astype(np.float32), _nearest_names(lab).astype(np.int8)


def warm_up() -> None:
    """Builds the lookup table now (about 0.4 s of CPU) instead of on the first photo."""
    _table()


def _lookup(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rgb: (..., 3) in 0..1: the CIELAB value and palette index of each pixel (_table)."""
    q = np.clip(np.rint(rgb * (_LEVELS - 1)), 0, _LEVELS - 1).astype(np.intp)
    index = (q[..., 0] * _LEVELS + q[..., 1]) * _LEVELS + q[..., 2]
    lab, names = _table()
    return np.take(lab, index, axis=0), names[index]


def _product_masks(lab: np.ndarray, background_distance: float, min_region: float) -> np.ndarray:
    """lab: (n, h, w, 3) photos of one size; True where a pixel is the product's."""
    n, h, w, _ = lab.shape
    band = max(1, min(h, w) // 16)
    border = np.concatenate(
        [
            lab[:, :band].reshape(n, -1, 3),
            lab[:, -band:].reshape(n, -1, 3),
            lab[:, :, :band].reshape(n, -1, 3),
            lab[:, :, -band:].reshape(n, -1, 3),
        ],
        axis=1,
    )
    background = np.median(border, axis=1)
    # The distance's square against the bound's, summed channel by channel in the order
    # np.linalg.norm sums them: the same pixels, without its reduction over the last axis.
    d = lab - background[:, None, None, :]
    masks = (
        d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
        > np.float32(background_distance) ** 2
    )
    # Too little stands out from the border: the product is (nearly) the background's colour,
    # or fills the frame. The middle of the photo is then the best guess of where it is.
    few = masks.mean(axis=(1, 2)) < min_region
    if few.any():
        centre = np.zeros((h, w), dtype=bool)
        centre[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
        masks[few] = centre
    return masks


def _nearest_names(pixels: np.ndarray) -> np.ndarray:
    """(n, 3) CIELAB pixels: the palette index of each one's nearest reference (-1: skin)."""
    # |p - r|^2 = |p|^2 - 2 p.r + |r|^2, and |p|^2 is the same for every reference of a
    # pixel: the nearest is the argmin of |r|^2 - 2 p.r, one small matrix product.
    scores = _REF_SQUARED - 2.0 * (pixels @ _REF_LAB.T)
    return _REF_NAME[np.argmin(scores, axis=1)]


_CHUNK_PIXELS = 1 << 20
"""Pixels of the photos shrunk in one call: 12 MB as float."""

_CENTRE_WEIGHTS: dict[tuple[int, int], np.ndarray] = {}


def _centre_weights(h: int, w: int) -> np.ndarray:
    """The product is usually in the middle of the frame: nearer pixels count for more."""
    grid = _CENTRE_WEIGHTS.get((h, w))
    if grid is None:
        ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
        grid = np.exp(-(((ys + 0.5) / h - 0.5) ** 2 + ((xs + 0.5) / w - 0.5) ** 2) / (2 * 0.3**2))
        if len(_CENTRE_WEIGHTS) < 64:
            _CENTRE_WEIGHTS[(h, w)] = grid
    return grid


def _shares(
    photos: torch.Tensor, max_side: int, background_distance: float, min_region: float
) -> np.ndarray:
    """photos: (n, 3, H, W) uint8 of one size. Per photo and palette name, the centre-weighted
    amount of the product's pixels that take the name (n, len(PALETTE)); skin takes none."""
    x = photos.float() / 255.0
    h, w = fitted_size(x.shape[2], x.shape[3], max_side)
    if (h, w) != x.shape[2:]:
        x = F.interpolate(x, size=(h, w), mode="area")
    lab, names = _lookup(x.permute(0, 2, 3, 1).numpy())
    masks = _product_masks(lab, background_distance, min_region)
    n = len(names)
    weights = np.where(masks & (names >= 0), _centre_weights(h, w), 0.0)
    slots = np.arange(n)[:, None, None] * len(PALETTE) + np.maximum(names, 0)
    return np.bincount(slots.ravel(), weights.ravel(), minlength=n * len(PALETTE)).reshape(
        n, len(PALETTE)
    )


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
    (names,) = _names_many(
        [image], max_colours, min_share, background_distance, min_region, max_side
    )
    return names


def _names_many(
    images: Sequence[torch.Tensor],
    max_colours: int = 2,
    min_share: float = 0.2,
    background_distance: float = 12.0,
    min_region: float = 0.04,
    max_side: int = 64,
) -> list[list[ColourName]]:
    """colour_names of each photo, done together: a photo's pixels are few, so the work is
    mostly numpy's per call, and each step here is one call for all the photos of a size."""
    named: list[list[ColourName]] = [[] for _ in images]
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        if image.ndim == 3 and image.shape[0] >= 3 and image.shape[1] > 0 and image.shape[2] > 0:
            by_size.setdefault((image.shape[1], image.shape[2]), []).append(i)
    for (h, w), members in by_size.items():
        # Photos of a size go together, in chunks whose float copies stay small however
        # large the photos are.
        step = max(1, _CHUNK_PIXELS // (h * w))
        shares = np.concatenate(
            [
                _shares(
                    torch.stack([images[i][:3] for i in chunk]),
                    max_side,
                    background_distance,
                    min_region,
                )
                for chunk in (members[at : at + step] for at in range(0, len(members), step))
            ]
        )
        for i, amounts in zip(members, shares, strict=True):
            total = amounts.sum()  # weights are positive: 0 only with no named pixel
            if not total:
                continue
            share = amounts / total
            order = np.argsort(-share, kind="stable")
            named[i] = [PALETTE[j] for j in order[:max_colours] if share[j] >= min_share]
    return named


def colour_words(images: Sequence[torch.Tensor]) -> str:
    """The colour words of a product's photos, each name once: "red 红色 white 白色"."""
    return colour_words_many([images])[0]


def colour_words_many(products: Sequence[Sequence[torch.Tensor]]) -> list[str]:
    """colour_words of each product's photos, all photos done together (_names_many)."""
    names = _names_many([image for photos in products for image in photos])
    out, at = [], 0
    for photos in products:
        seen: dict[str, ColourName] = {}
        for per_photo in names[at : at + len(photos)]:
            for name in per_photo:
                seen.setdefault(name.english, name)
        out.append(" ".join(name.words for name in seen.values()))
        at += len(photos)
    return out
