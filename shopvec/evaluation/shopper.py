"""A synthetic shopper-photo set from the Myntra sample: catalogue photos as a shopper takes them.

The corpus is the Myntra evaluation corpus (``convert_myntra``, its photos unchanged); the
queries are new photos made from sampled products' own photos: the product cut out of its
white studio background, cropped (a part of it out of frame), rotated, shrunk, and pasted
onto a cluttered background (a colour gradient, shapes, noise, and pieces of other products'
photos), then saved as a JPEG. Everything is drawn from ``random.Random(seed)`` and numpy's
generator of the same seed, over id-sorted products, so the same sample and seed always give
the same files.

Query sets, told apart by the prefix of their ids:

- ``shopper:``      a shopper's photo of a product; relevant: that product (R@1 says whether
  the catalogue photo comes first);
- ``shopper_type:`` the same photo; relevant: every product of its article type, the product
  itself included.

Run it as ``shopvec convert shopper SOURCE_FOLDER DEST_FOLDER``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shopvec.evaluation.dataset import load_dataset, write_jsonl, write_qrels
from shopvec.evaluation.myntra import ConversionSummary, _read_styles, convert_myntra

__all__ = ["ShopperStyle", "convert_shopper", "shopper_photo"]

_WHITE = 235
"""A pixel whose three channels are all at or above this is studio background."""


@dataclass(frozen=True)
class ShopperStyle:
    """How far a shopper's photo strays from the catalogue's."""

    canvas: tuple[int, int] = (160, 160)
    """Width and height of the made photo (the catalogue's are 60 by 80)."""
    keep: tuple[float, float] = (0.7, 1.0)
    """Share of the product's width and height kept by the crop."""
    rotate: float = 20.0
    """Largest rotation, in degrees, either way."""
    size: tuple[float, float] = (0.35, 0.65)
    """The product's height as a share of the canvas height."""
    shapes: tuple[int, int] = (6, 14)
    distractors: tuple[int, int] = (1, 3)
    """Pieces of other products' photos in the background."""
    noise: float = 6.0
    """Standard deviation of the pixel noise, in grey levels."""
    jpeg_quality: int = 75


def _foreground(photo: Image.Image) -> Image.Image:
    """The product's mask: everything but the near-white studio background, a little grown."""
    pixels = np.asarray(photo.convert("RGB"))
    mask = (pixels < _WHITE).any(axis=2).astype(np.uint8) * 255
    return Image.fromarray(mask, "L").filter(ImageFilter.MaxFilter(3))


def _background(
    size: tuple[int, int],
    others: list[Image.Image],
    style: ShopperStyle,
    rng: random.Random,
) -> Image.Image:
    w, h = size
    a = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    b = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    gradient = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3))
    canvas = Image.fromarray(gradient.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(*style.shapes)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(8, w // 2), y0 + rng.randint(8, h // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    for other in others:
        piece = other.resize((other.width * 3 // 4, other.height * 3 // 4))
        canvas.paste(
            piece,
            (rng.randint(-piece.width // 2, w - piece.width // 2), rng.randrange(h)),
            _foreground(piece),
        )
    return canvas


def shopper_photo(
    photo: Image.Image,
    others: list[Image.Image],
    rng: random.Random,
    noise: np.random.Generator,
    style: ShopperStyle | None = None,
) -> Image.Image:
    """One shopper's photo of the product in ``photo``; ``others``: pieces for the clutter."""
    style = style or ShopperStyle()
    photo = photo.convert("RGB")
    mask = _foreground(photo)
    box = mask.getbbox() or (0, 0, photo.width, photo.height)
    photo, mask = photo.crop(box), mask.crop(box)
    # The crop: part of the product out of frame, on a side drawn at random.
    kw, kh = (rng.uniform(*style.keep) for _ in range(2))
    cw, ch = max(1, round(photo.width * kw)), max(1, round(photo.height * kh))
    x0, y0 = rng.randint(0, photo.width - cw), rng.randint(0, photo.height - ch)
    photo, mask = photo.crop((x0, y0, x0 + cw, y0 + ch)), mask.crop((x0, y0, x0 + cw, y0 + ch))
    angle = rng.uniform(-style.rotate, style.rotate)
    photo = photo.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    w, h = style.canvas
    height = max(4, round(h * rng.uniform(*style.size)))
    width = max(4, min(w, round(photo.width * height / photo.height)))
    photo = photo.resize((width, height), Image.Resampling.BILINEAR)
    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    canvas = _background((w, h), others, style, rng)
    canvas.paste(photo, (rng.randint(0, w - width), rng.randint(0, h - height)), mask)
    pixels = np.asarray(canvas, np.float32) + noise.normal(0.0, style.noise, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _read(path: Path | None) -> Image.Image:
    assert path is not None
    with Image.open(path) as photo:
        return photo.convert("RGB")


def convert_shopper(
    source: str | Path,
    dest: str | Path,
    *,
    seed: int = 13,
    n_queries: int = 200,
    images: Literal["copy", "symlink", "hardlink"] = "copy",
    style: ShopperStyle | None = None,
) -> ConversionSummary:
    """Writes the Myntra corpus and the shopper queries to ``dest`` (see the module docstring).

    The products are sampled among those with at least one other of their article type, so
    that ``shopper_type`` has something to find besides the product itself.
    """
    source, dest = Path(source), Path(dest)
    summary = convert_myntra(source, dest, seed=seed, n_title=0, n_image=0, images=images)
    # The label queries of the Myntra set are not this set's business.
    summary.queries = {}
    corpus = {doc.id: doc for doc in load_dataset(dest).corpus}
    types = {row["id"]: row["articleType"] for row in _read_styles(source / "styles.csv")}
    by_type: dict[str, list[str]] = defaultdict(list)
    for doc_id in corpus:
        by_type[types[doc_id]].append(doc_id)
    ids = sorted(corpus, key=lambda i: (len(i), i))
    typed = [i for i in ids if types[i] and len(by_type[types[i]]) >= 2]
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    chosen = sorted(rng.sample(typed, min(n_queries, len(typed))), key=ids.index)

    queries, qrels = [], {}
    (dest / "shopper").mkdir(parents=True, exist_ok=True)
    for doc_id in chosen:
        pool = [i for i in ids if i != doc_id]
        others = [
            _read(corpus[i].image)
            for i in rng.sample(pool, rng.randint(*(style or ShopperStyle()).distractors))
        ]
        made = shopper_photo(_read(corpus[doc_id].image), others, rng, noise, style)
        name = f"shopper/{doc_id}.jpg"
        made.save(dest / name, quality=(style or ShopperStyle()).jpeg_quality)
        queries.append({"_id": f"shopper:{doc_id}", "image": name})
        qrels[f"shopper:{doc_id}"] = {doc_id: 1}
        queries.append({"_id": f"shopper_type:{doc_id}", "image": name})
        qrels[f"shopper_type:{doc_id}"] = {i: 1 for i in by_type[types[doc_id]]}
    summary.queries = {"shopper": len(chosen), "shopper_type": len(chosen)}
    write_jsonl(dest / "queries.jsonl", queries)
    write_qrels(dest / "qrels" / "test.tsv", qrels)
    return summary
