"""The evaluation runner end to end on a tiny generated set: the real indexer and search service,
the hashing encoder, the in-memory store; and the `shopvec eval` command around it."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from shopvec.cli import main
from shopvec.encoders import HashingEncoder
from shopvec.evaluation.cache import CachingEncoder
from shopvec.evaluation.dataset import EvalDataset, load_dataset, write_jsonl, write_qrels
from shopvec.evaluation.report import render_table
from shopvec.evaluation.runner import EvalConfig, EvalReport, run_evaluation
from shopvec.imaging import ImageLoader
from shopvec.settings import ImageFetchSettings
from shopvec.store import InMemoryProductStore

COLOURS = {"red": (210, 30, 30), "blue": (30, 40, 200), "green": (40, 180, 60)}
KINDS = ("shirt", "shoe")


def _photo(path: Path, rgb: tuple[int, int, int], seed: int) -> None:
    # A colour with a little noise, so that no two photos are the same bytes.
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb) + rng.integers(-20, 20, (24, 18, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, "PNG")


def build_set(root: Path, *, broken: bool = False) -> Path:
    """Two products per colour and kind (12); label, title, photo and photo-with-words queries."""
    (root / "img").mkdir(parents=True)
    corpus: list[dict[str, Any]] = []
    for n, (colour, kind, copy) in enumerate(
        (c, k, i) for c in COLOURS for k in KINDS for i in range(2)
    ):
        pid = f"{colour}-{kind}-{copy}"
        _photo(root / "img" / f"{pid}.png", COLOURS[colour], n)
        corpus.append(
            {
                "_id": pid,
                "title": f"{colour} {kind} model {n}",
                "image": f"img/{pid}.png",
                "category": f"Apparel/{kind}",
            }
        )
    if broken:
        (root / "img" / "broken.png").write_bytes(b"\x89PNG not really")
        corpus.append({"_id": "broken", "title": "red shirt broken", "image": "img/broken.png"})
    queries: list[dict[str, Any]] = []
    qrels: dict[str, dict[str, int]] = {}
    for colour in COLOURS:
        queries.append({"_id": f"label:{colour}", "text": f"{colour} shirt"})
        qrels[f"label:{colour}"] = {f"{colour}-shirt-{i}": 1 for i in range(2)}
        queries.append(
            {
                "_id": f"image:{colour}",
                "image": f"img/{colour}-shoe-0.png",
                "exclude": [f"{colour}-shoe-0"],
            }
        )
        qrels[f"image:{colour}"] = {f"{colour}-shoe-1": 1}
        queries.append(
            {"_id": f"both:{colour}", "text": "shoe", "image": f"img/{colour}-shoe-1.png"}
        )
        qrels[f"both:{colour}"] = {f"{colour}-shoe-{i}": 1 for i in range(2)}
    if broken:
        # Judged relevant, but never indexed: unreachable for every ranking, random or not.
        qrels["label:red"]["broken"] = 1
    queries.append({"_id": "title:red-shirt-0", "text": corpus[0]["title"]})
    qrels["title:red-shirt-0"] = {"red-shirt-0": 1}
    # A query whose only judgement is "not relevant" cannot be scored: its block is left out.
    queries.append({"_id": "nothing:x", "text": "anything"})
    qrels["nothing:x"] = {"red-shirt-0": 0}
    write_jsonl(root / "corpus.jsonl", corpus)
    write_jsonl(root / "queries.jsonl", queries)
    write_qrels(root / "qrels" / "test.tsv", qrels)
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> EvalDataset:
    return load_dataset(build_set(tmp_path / "set"))


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """The command configures the root logger; put it back for the tests after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def images() -> Iterator[ImageLoader]:
    with ImageLoader(ImageFetchSettings()) as loader:
        yield loader


def _in_range(report: EvalReport) -> None:
    for block in report.blocks:
        for evaluation in block.methods.values():
            assert evaluation.means, block.name
            for name, value in evaluation.means.items():
                assert 0.0 <= value <= 1.0 + 1e-9, (block.name, name, value)
        for name, value in block.chance.items():
            assert 0.0 < value < 1.0, (block.name, name, value)


def test_report_shape_and_ranges(dataset: EvalDataset, images: ImageLoader) -> None:
    encoder = HashingEncoder()
    report = run_evaluation(dataset, encoder, InMemoryProductStore, images)

    names = [b.name for b in report.blocks]
    assert names == [
        "label/text2image",
        "label/text2text",
        "label/text2product",
        "image/image2image",
        "both/cross",
        "title/text2image",
        "title/text2text",
        "title/text2product",
    ]
    by_name = {b.name: b for b in report.blocks}
    assert list(by_name["label/text2product"].methods) == ["weighted50", "concat50", "attention50"]
    assert list(by_name["both/cross"].methods) == ["weighted50", "concat50", "attention50"]
    assert list(by_name["label/text2image"].methods) == ["image_vec"]
    assert list(by_name["image/image2image"].methods) == ["visual_vec"]
    assert list(by_name["label/text2text"].methods) == ["text_vec"]
    assert by_name["label/text2text"].field == "text_vec"
    assert report.corpus == report.indexed == report.with_image == 12
    assert report.failed == {}
    assert all(b.pool == 12 and not any(b.errors.values()) for b in report.blocks)
    assert list(report.index_seconds) == ["weighted50", "concat50", "attention50"]
    _in_range(report)

    # Photo queries find their own photo first, but it is excluded: the chance level knows.
    image = by_name["image/image2image"]
    assert image.methods["visual_vec"].n_queries == 3
    assert math.isclose(image.chance["P@1"], 1 / 11)
    # The title of a product finds that product by its words.
    assert by_name["title/text2text"].methods["text_vec"].means["P@1"] == 1.0
    # Colour histograms carry the colour: a photo finds the other shoe of its colour.
    assert image.methods["visual_vec"].means["R@5"] > image.chance["R@5"]

    table = render_table(report.results(), report.chance())
    assert "== label/text2product ==" in table and "(chance)" in table
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["corpus"]["indexed"] == 12
    assert payload["blocks"][0]["methods"]["image_vec"]["scored"] == 3


def test_scenarios_and_fusions_narrow_the_run(
    dataset: EvalDataset, images: ImageLoader, tmp_path: Path
) -> None:
    made: list[str] = []

    def stores(spec: Any) -> InMemoryProductStore:
        made.append(spec.name)
        return InMemoryProductStore(spec)

    config = EvalConfig(scenarios=("image2image", "text2image"), ks=(1, 3), depth=5)
    report = run_evaluation(dataset, HashingEncoder(), stores, images, config)
    assert [b.name for b in report.blocks] == [
        "label/text2image",
        "image/image2image",
        "title/text2image",
    ]
    # No fused scenario: one collection is enough, whatever the fusion methods.
    assert len(made) == 1
    assert set(report.blocks[0].chance) == {
        "P@1", "P@3", "R@1", "R@3", "MRR@1", "MRR@3", "nDCG@1", "nDCG@3", "MAP"
    }  # fmt: skip

    config = EvalConfig(fusions=("concat",), scenarios=("text2product",))
    report = run_evaluation(dataset, HashingEncoder(), stores, images, config)
    assert [list(b.methods) for b in report.blocks] == [["concat50"], ["concat50"]]


def test_refused_documents_leave_the_pool(tmp_path: Path, images: ImageLoader) -> None:
    dataset = load_dataset(build_set(tmp_path / "set", broken=True))
    config = EvalConfig(fusions=("weighted",))
    report = run_evaluation(dataset, HashingEncoder(), InMemoryProductStore, images, config)
    assert list(report.failed) == ["broken"]
    assert (report.corpus, report.indexed) == (13, 12)
    assert {b.pool for b in report.blocks} == {12}
    _in_range(report)
    label = next(b for b in report.blocks if b.name == "label/text2text")
    # Two of the three red shirts can be found: a perfect ranking would reach R@5 = 2/3 on it.
    assert label.chance["R@5"] == pytest.approx(5 / 12)
    assert label.methods["text_vec"].per_query["label:red"]["R@5"] <= 2 / 3


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="depth"):
        EvalConfig(depth=5, ks=(1, 10))
    with pytest.raises(ValueError, match="unknown scenarios"):
        EvalConfig(scenarios=("photo2poem",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fusion"):
        EvalConfig(fusions=())


def test_cache_encodes_each_input_once(
    dataset: EvalDataset, images: ImageLoader, tmp_path: Path
) -> None:
    inner = HashingEncoder()
    cached = CachingEncoder(inner, tmp_path / "cache")
    first = run_evaluation(dataset, cached, InMemoryProductStore, images)
    # Twelve photos: the photo queries are corpus photos, and three collections share them.
    assert inner.images_seen == 12
    assert cached.hits > 0
    path = cached.save()
    assert path is not None and path.is_file()

    again_inner = HashingEncoder()
    again = CachingEncoder(again_inner, tmp_path / "cache")
    second = run_evaluation(dataset, again, InMemoryProductStore, images)
    assert again_inner.images_seen == again_inner.texts_seen == 0
    assert second.results() == first.results()


def test_cache_keeps_the_photo_confidence(tmp_path: Path) -> None:
    photos = [torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (10, 200)]
    for confidence in (0.4, None):
        cached = CachingEncoder(HashingEncoder(photo_confidence=confidence), tmp_path / "c")
        first = cached.encode_images(photos)
        cached.save()
        again = CachingEncoder(HashingEncoder(photo_confidence=confidence), tmp_path / "c")
        second = again.encode_images(photos)
        assert again.misses == 0
        if confidence is None:
            assert first.confidence is None and second.confidence is None
        else:
            np.testing.assert_allclose(second.confidence, [confidence] * 2)
        (tmp_path / "c").joinpath(f"{cached.info.key}.npz").unlink()


@pytest.mark.usefixtures("cli_logging")
def test_eval_command(tmp_path: Path) -> None:
    root = build_set(tmp_path / "set")
    out = io.StringIO()
    plot = tmp_path / "plot.png"
    args = ["eval", str(root), "--backend", "hashing", "--in-memory", "--quiet", "--no-cache"]
    with redirect_stdout(out):
        options = ["--fusion", "weighted", "concat", "--weighting", "confidence", "fixed"]
        code = main([*args, "--json", "--plot", str(plot), *options])
    assert code == 0
    payload = json.loads(out.getvalue())
    # Each with the Chinese words' English senses too (+en; the in-memory store has no
    # full-text search, so no +bm25 rows).
    methods = ("weighted50", "weighted50fixed", "concat50", "concat50fixed")
    assert payload["results"]["label/text2product"].keys() == {
        *methods,
        *(f"{m}+en" for m in methods),
    }
    assert payload["results"]["image/image2image"].keys() == {
        "visual_vec",
        "visual_vec+crops",
        "visual_vec+words",
        "visual_vec+crops+words",
    }
    assert payload["chance"]["image/image2image"]["P@1"] == pytest.approx(1 / 11)
    assert plot.read_bytes().startswith(b"\x89PNG")

    out = io.StringIO()
    with redirect_stdout(out):
        assert main([*args, "--scenario", "image2image", "--k", "1", "5", "--no-glossary"]) == 0
    text = out.getvalue()
    assert "== image/image2image  (3 queries, 12 candidates) ==" in text
    assert "R@5" in text and "R@10" not in text


@pytest.mark.usefixtures("cli_logging")
def test_convert_command(tmp_path: Path) -> None:
    source = tmp_path / "myntra"
    (source / "images").mkdir(parents=True)
    rows = [
        ("1", "Blue", "Shirts", "Acme Men Blue Shirt"),
        ("2", "Blue", "Shirts", "Other Men Blue Shirt"),
        ("3", "Red", "Heels", "Acme Women Red Heels"),
    ]
    header = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
    lines = [header + "productDisplayName"]
    for pid, colour, kind, title in rows:
        lines.append(f"{pid},Men,Apparel,Topwear,{kind},{colour},Summer,2012.0,Casual,{title}")
        _photo(source / "images" / f"{pid}.jpg", (100, 100, 100), int(pid))
    (source / "styles.csv").write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["convert", "myntra", str(source), str(tmp_path / "dest")]) == 0
    assert "3 products" in out.getvalue()
    assert len(load_dataset(tmp_path / "dest").corpus) == 3


def test_cache_keeps_the_photo_regions(tmp_path: Path) -> None:
    photos = [torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (10, 200)]
    cached = CachingEncoder(HashingEncoder(regions=True), tmp_path / "c")
    first = cached.encode_images(photos)
    assert first.regions is not None and first.regions.shape == (2, 4, cached.info.joint_dim)
    cached.save()
    again_inner = HashingEncoder(regions=True)
    again = CachingEncoder(again_inner, tmp_path / "c")
    second = again.encode_images(photos)
    assert again_inner.images_seen == 0
    assert second.regions is not None
    np.testing.assert_allclose(second.regions, first.regions, atol=2e-3)  # kept as float16
    # A cache made without regions is not enough for an encoder that gives them.
    plain = CachingEncoder(HashingEncoder(), tmp_path / "d")
    plain.encode_images(photos)
    plain.save()
    (tmp_path / "d" / f"{plain.info.key}.npz").replace(tmp_path / "c" / f"{plain.info.key}.npz")
    (tmp_path / "c" / f"{plain.info.key}.regions.npz").unlink()
    wants = HashingEncoder(regions=True)
    CachingEncoder(wants, tmp_path / "c").encode_images(photos)
    assert wants.images_seen == 2


def test_weightings_photo_crops_and_photo_words_each_get_a_row(
    dataset: EvalDataset, images: ImageLoader
) -> None:
    config = EvalConfig(
        fusions=("weighted", "attention"),
        weightings=("confidence", "fixed"),
        photo_crops=(False, True),
        photo_words=(False, True),
    )
    report = run_evaluation(
        dataset, HashingEncoder(regions=True), InMemoryProductStore, images, config
    )
    by_name = {b.name: b for b in report.blocks}
    assert list(by_name["label/text2product"].methods) == [
        "weighted50",
        "weighted50fixed",
        "attention50",
        "attention50fixed",
    ]
    assert list(by_name["image/image2image"].methods) == [
        "visual_vec",
        "visual_vec+crops",
        "visual_vec+words",
        "visual_vec+crops+words",
    ]
    _in_range(report)
