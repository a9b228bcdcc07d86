"""Multi-crop matching for photo queries: a shopper's photo searched whole and as crops of it.

A catalogue photo shows the product alone on a plain background; a shopper's photo shows it
smaller, cut off at an edge, on a cluttered background, and one pooled vector of the whole
frame is mostly background. So a photo query (``image2image``) is also searched as a grid of
crops (by default 3 by 3 crops of half the width and height, and 2 by 2 of seven tenths,
overlapping), each product scored by the best of its similarities to the whole photo and to
every crop: the crop that frames the product finds it. The crops are encoded in one batch with
the photo model and searched in one store call per query; products come back in the order of
their best score.

The catalogue side is unchanged (one pooled vector a photo), so indexing costs nothing more;
a photo query costs one encoding per crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shopvec.encoders.base import Encoder
from shopvec.search.plan import Plan
from shopvec.store.base import Hit, ProductStore

__all__ = ["PhotoCrops", "crop_grid", "merge_best"]

_MIN_SIDE = 8
"""Crops smaller than this many pixels on a side are not made."""


def crop_grid(
    image: torch.Tensor, scales: Sequence[tuple[float, int]] = ((0.5, 3), (0.7, 2))
) -> list[torch.Tensor]:
    """For each (share, n): n by n crops of that share of the height and width, spread evenly
    from edge to edge. The whole image is not among them."""
    _, height, width = image.shape
    out = []
    for share, n in scales:
        h, w = round(height * share), round(width * share)
        if h < _MIN_SIDE or w < _MIN_SIDE or n < 1:
            continue
        for i in range(n):
            for j in range(n):
                y = round(i * (height - h) / (n - 1)) if n > 1 else (height - h) // 2
                x = round(j * (width - w) / (n - 1)) if n > 1 else (width - w) // 2
                out.append(image[:, y : y + h, x : x + w])
    return out


def merge_best(lists: Sequence[Sequence[Hit]], limit: int) -> list[Hit]:
    """One hit per product, its best score over the lists, best first, at most ``limit``."""
    best: dict[str, Hit] = {}
    for hits in lists:
        for hit in hits:
            held = best.get(hit.id)
            if held is None or hit.score > held.score:
                best[hit.id] = hit
    return sorted(best.values(), key=lambda h: (-h.score, h.id))[:limit]


@dataclass(frozen=True)
class PhotoCrops:
    scales: tuple[tuple[float, int], ...] = ((0.5, 3), (0.7, 2))

    def refine(self, plans: Sequence[Plan], encoder: Encoder, store: ProductStore) -> None:
        """For each photo query whose first leg has searched the visual field, searches the
        crops of its photo (as the service loaded it) too and merges them into that leg's
        hits."""
        crops: list[tuple[Plan, list[torch.Tensor]]] = []
        for plan in plans:
            if (
                plan.scenario == "image2image"
                and plan.error is None
                and plan.legs
                and plan.legs[0].field == "visual_vec"
                and plan.legs[0].hits is not None
                and isinstance(plan.photo, torch.Tensor)
            ):
                made = crop_grid(plan.photo, self.scales)
                if made:
                    crops.append((plan, made))
        if not crops:
            return
        vectors = encoder.encode_images([c for _, made in crops for c in made]).visual
        cursor = 0
        for plan, made in crops:
            leg = plan.legs[0]
            mine = np.asarray(vectors[cursor : cursor + len(made)], np.float32)
            cursor += len(made)
            found = store.search(leg.field, mine, leg.limit, leg.filter, leg.with_vectors)
            leg.hits = merge_best([leg.hits or [], *found], leg.limit)
