"""The synthetic shopper-photo set: `shopvec convert shopper`, seeded and rebuildable."""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shopvec.cli import main
from shopvec.evaluation.dataset import load_dataset
from shopvec.evaluation.shopper import shopper_photo

ROWS = [
    ("1", "Blue", "Shirts", (20, 40, 200)),
    ("2", "Blue", "Shirts", (30, 60, 180)),
    ("3", "Red", "Heels", (200, 20, 20)),
    ("4", "Red", "Heels", (180, 40, 40)),
    ("5", "Green", "Bags", (20, 160, 40)),
]


@pytest.fixture
def cli_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _studio_photo(rgb: tuple[int, int, int]) -> Image.Image:
    """A product on a white studio background, as the catalogue's are (60 by 80)."""
    photo = Image.new("RGB", (60, 80), (255, 255, 255))
    photo.paste(Image.new("RGB", (30, 50), rgb), (15, 15))
    return photo


def _source(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    header = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
    lines = [header + "productDisplayName"]
    for pid, colour, kind, rgb in ROWS:
        lines.append(f"{pid},Men,Apparel,Topwear,{kind},{colour},Summer,2012.0,Casual,A {kind}")
        _studio_photo(rgb).save(root / "images" / f"{pid}.jpg", quality=95)
    (root / "styles.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.usefixtures("cli_logging")
def test_convert_shopper_is_seeded_and_in_the_layout(tmp_path: Path) -> None:
    source = _source(tmp_path / "myntra")
    outs = []
    for name in ("a", "b"):
        out = io.StringIO()
        with redirect_stdout(out):
            args = ["convert", "shopper", str(source), str(tmp_path / name), "--n-image", "3"]
            assert main(args) == 0
        outs.append(out.getvalue())
    assert "5 products, queries shopper: 3, shopper_type: 3" in outs[0]
    a, b = (load_dataset(tmp_path / name) for name in ("a", "b"))
    assert len(a.corpus) == 5
    assert [q.id for q in a.queries] == [q.id for q in b.queries]
    for qa, qb in zip(a.queries, b.queries, strict=True):
        assert qa.image is not None and qb.image is not None
        assert qa.image.read_bytes() == qb.image.read_bytes()  # rebuilt byte for byte
        with Image.open(qa.image) as photo:
            assert photo.size == (160, 160)
    for query in a.queries:
        own = query.id.split(":", 1)[1]
        kind = next(k for pid, _, k, _ in ROWS if pid == own)
        if query.id.startswith("shopper:"):
            assert a.qrels[query.id] == {own: 1}
        else:
            assert set(a.qrels[query.id]) == {pid for pid, _, k, _ in ROWS if k == kind}
    # Another seed makes other photos.
    with redirect_stdout(io.StringIO()):
        args = ["convert", "shopper", str(source), str(tmp_path / "c"), "--seed", "14"]
        assert main([*args, "--n-image", "3"]) == 0
    c = load_dataset(tmp_path / "c")
    assert [q.image.read_bytes() for q in c.queries if q.image] != [
        q.image.read_bytes() for q in a.queries if q.image
    ]


def test_the_product_is_cut_out_shrunk_and_pasted_on_clutter() -> None:
    product = _studio_photo((200, 20, 20))
    made = shopper_photo(product, [], random.Random(0), np.random.default_rng(0))
    pixels = np.asarray(made).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    white = (pixels > 235).all(axis=2)
    # The product covers part of the frame, and its studio background does not come along.
    assert 0.02 < red.mean() < 0.5
    assert white.mean() < 0.05
