"""`shopvec bench encoders` on a generated Myntra-style folder, with the weightless encoder."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shopvec.cli import main
from shopvec.evaluation.throughput import bench_encoders, load_samples, render_throughput


def _folder(root: Path, n: int) -> Path:
    (root / "images").mkdir(parents=True)
    lines = ["id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
             "productDisplayName"]  # fmt: skip
    for i in range(n):
        lines.append(f"{i},Men,Apparel,Topwear,Shirts,Blue,Summer,2012.0,Casual,Blue Shirt {i}")
        pixels = np.full((8, 6, 3), 20 * i % 255, dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.jpg", "JPEG")
    (root / "styles.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def cli_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_bench_encoders(tmp_path: Path) -> None:
    photos, titles = load_samples(_folder(tmp_path / "data", 5), 4)
    assert len(photos) == len(titles) == 4 and titles[0] == "Blue Shirt 0"
    results = bench_encoders(["hashing"], [1, 3], photos, titles, repeats=2)
    assert [(r.backend, r.batch_size) for r in results] == [("hashing", 1), ("hashing", 3)]
    for r in results:
        assert len(r.image_runs) == len(r.text_runs) == 2
        assert r.images_per_s == max(r.image_runs) > 0 and r.texts_per_s == max(r.text_runs) > 0
    table = render_throughput(results)
    assert table.splitlines()[0].split() == ["backend", "batch", "images/s", "texts/s"]
    with pytest.raises(ValueError, match="unknown backend"):
        bench_encoders(["nonesuch"], [1], photos, titles)


@pytest.mark.usefixtures("cli_logging")
def test_bench_command(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", 4)
    out = io.StringIO()
    args = ["bench", "encoders", "--backends", "hashing", "--batch-sizes", "1", "2"]
    with redirect_stdout(out):
        code = main([*args, "--n", "4", "--repeats", "1", "--data", str(data), "--json"])
    assert code == 0
    payload = json.loads(out.getvalue())
    assert payload["machine"]["cpus"] >= 1
    assert [r["batch_size"] for r in payload["results"]] == [1, 2]
