"""The evaluation folder loader, its error messages, and the Myntra converter on a small subset."""

from __future__ import annotations

import base64
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from schemas.product import ProductUpsert
from shopvec.evaluation.dataset import DatasetError, load_dataset, write_jsonl, write_qrels
from shopvec.evaluation.myntra import convert_myntra

REPO = Path(__file__).resolve().parents[2]
MYNTRA_CANDIDATES = [
    REPO / "data" / "myntra-fashion-1000",
    Path("/work/shared/data/myntra-fashion-1000"),
]
MYNTRA = next((p for p in MYNTRA_CANDIDATES if (p / "styles.csv").is_file()), None)

CORPUS: list[dict[str, str]] = [
    {"_id": "p1", "title": "Blue Shirt", "text": "cotton", "image": "img/p1.jpg",
     "category": "Apparel > Topwear > Shirts", "brand": "Acme"},
    {"_id": "p2", "title": "Red Heels", "text": "", "image": "img/p2.jpg",
     "category": "Footwear/Shoes/Heels"},
    {"_id": "p3", "title": "", "text": "a plain mug"},
]  # fmt: skip
QUERIES: list[dict[str, Any]] = [
    {"_id": "label:blue-shirt", "text": "blue shirt"},
    {"_id": "image:p2", "image": "img/p2.jpg", "exclude": ["p2"]},
    {"_id": "plain", "text": "mug"},
]
QRELS = {"label:blue-shirt": {"p1": 2, "p3": 0}, "image:p2": {"p1": 1}, "plain": {"p3": 1}}


def _build(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    (root / "img" / "p1.jpg").write_bytes(b"\xff\xd8 first photo")
    (root / "img" / "p2.jpg").write_bytes(b"\xff\xd8 second photo")
    write_jsonl(root / "corpus.jsonl", CORPUS)
    write_jsonl(root / "queries.jsonl", QUERIES)
    write_qrels(root / "qrels" / "test.tsv", QRELS)
    return root


def test_round_trip(tmp_path: Path) -> None:
    ds = load_dataset(_build(tmp_path / "set"))
    assert [d.id for d in ds.corpus] == ["p1", "p2", "p3"]
    assert ds.corpus[0].image == tmp_path / "set" / "img" / "p1.jpg"
    assert ds.corpus[2].image is None
    assert ds.qrels == QRELS
    assert list(ds.query_sets()) == ["label", "image", ""]
    assert ds.qrels_for(ds.query_sets()["image"]) == {"image:p2": {"p1": 1}}
    assert ds.exclusions() == {"image:p2": frozenset({"p2"})}
    assert ds.queries[1].text is None and ds.queries[1].image is not None


def test_product_events(tmp_path: Path) -> None:
    events = list(load_dataset(_build(tmp_path / "set")).to_product_events(version=7))
    assert all(isinstance(e, ProductUpsert) and e.version == 7 for e in events)
    first, second, third = events
    assert first.category_path == ["Apparel", "Topwear", "Shirts"]
    assert second.category_path == ["Footwear", "Shoes", "Heels"]
    assert (first.brand, second.brand) == ("Acme", None)
    assert first.description == "cotton"
    assert base64.b64decode(first.images[0].data_base64 or "") == b"\xff\xd8 first photo"
    assert third.images == [] and third.category_path == []
    # The same folder gives the same events, byte for byte.
    again = list(load_dataset(tmp_path / "set").to_product_events(version=7))
    assert [e.to_bytes() for e in again] == [e.to_bytes() for e in events]


def _corrupt(root: Path, name: str, text: str) -> None:
    (root / name).write_text(text, encoding="utf-8")


HEADER = "query-id\tcorpus-id\tscore\n"
ONE_DOC = '{"_id": "p1", "title": "a"}\n'
MALFORMED = [
    ("corpus.jsonl", ONE_DOC + "{not json\n", r"corpus.jsonl line 2: not valid JSON"),
    ("corpus.jsonl", '{"title": "a"}\n', r"corpus.jsonl line 1: missing '_id'"),
    ("corpus.jsonl", '{"_id": "p1", "image": "img/no.jpg"}\n', r"1: image 'img/no.jpg' not found"),
    ("corpus.jsonl", '{"_id": "p1", "title": 5}\n', r"line 1: 'title' must be a string"),
    ("corpus.jsonl", ONE_DOC + ONE_DOC, r"corpus.jsonl line 2: duplicate _id 'p1'"),
    ("queries.jsonl", '{"_id": "q"}\n', r"queries.jsonl line 1: a query needs a text or an image"),
    ("queries.jsonl", "[1, 2]\n", r"queries.jsonl line 1: expected a JSON object"),
    ("qrels/test.tsv", "q\tp\t1\n", r"qrels/test.tsv line 1: expected the header"),
    ("qrels/test.tsv", HEADER + "plain\tp9\t1\n", r"test.tsv line 2: unknown corpus-id 'p9'"),
    ("qrels/test.tsv", HEADER + "\nnope\tp1\t1\n", r"test.tsv line 3: unknown query-id 'nope'"),
    ("qrels/test.tsv", HEADER + "plain\tp1\thigh\n", r"line 2: score 'high' is not an integer"),
    ("qrels/test.tsv", HEADER + "plain p1 1\n", r"line 2: expected 3 tab-separated columns"),
]


@pytest.mark.parametrize(("name", "text", "message"), MALFORMED)
def test_malformed_folder(tmp_path: Path, name: str, text: str, message: str) -> None:
    root = _build(tmp_path / "set")
    _corrupt(root, name, text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    root = _build(tmp_path / "set")
    (root / missing).unlink()
    with pytest.raises(DatasetError, match=f"missing {missing}"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="no evaluation folder"):
        load_dataset(tmp_path / "elsewhere")


def test_invalid_product_names_the_document(tmp_path: Path) -> None:
    root = _build(tmp_path / "set")
    _corrupt(root, "corpus.jsonl", '{"_id": "bad id with spaces", "title": "a"}\n')
    _corrupt(root, "qrels/test.tsv", "query-id\tcorpus-id\tscore\n")
    with pytest.raises(DatasetError, match="'bad id with spaces' is not a valid product"):
        list(load_dataset(root).to_product_events())


@pytest.fixture
def myntra_subset(tmp_path: Path) -> Path:
    if MYNTRA is None:
        pytest.skip("the Myntra sample is not available")
    source = tmp_path / "myntra"
    (source / "images").mkdir(parents=True)
    with (MYNTRA / "styles.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        rows = [next(reader)] + [row for _, row in zip(range(30), reader, strict=False)]
    with (source / "styles.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    for row in rows[1:]:
        shutil.copyfile(MYNTRA / "images" / f"{row[0]}.jpg", source / "images" / f"{row[0]}.jpg")
    shutil.copyfile(MYNTRA / "README.md", source / "README.md")
    return source


def test_myntra_conversion(myntra_subset: Path, tmp_path: Path) -> None:
    with (myntra_subset / "styles.csv").open(encoding="utf-8", newline="") as handle:
        styles = {row["id"]: row for row in csv.DictReader(handle)}
    dropped = next(iter(styles))
    (myntra_subset / "images" / f"{dropped}.jpg").unlink()

    summary = convert_myntra(myntra_subset, tmp_path / "out", n_title=10, n_image=8)
    ds = load_dataset(tmp_path / "out")
    assert summary.products == len(ds.corpus) == 29
    assert summary.skipped_without_image == [dropped]
    assert (tmp_path / "out" / "SOURCE.md").is_file()
    assert summary.queries["title"] == 10 and summary.queries["image"] == 8
    assert summary.queries["label"] >= 1
    sets = ds.query_sets()
    assert {p: len(q) for p, q in sets.items()} == summary.queries

    for query in sets["label"]:
        relevant = ds.qrels[query.id]
        assert len(relevant) >= 2
        assert all(f"{styles[d]['baseColour']} {styles[d]['articleType']}" == query.text
                   for d in relevant)  # fmt: skip
    for query in sets["title"]:
        (own,) = ds.qrels[query.id]
        assert styles[own]["productDisplayName"] == query.text
    for query in sets["image"]:
        own = query.id.split(":", 1)[1]
        found = set(ds.qrels[query.id])
        assert query.exclude == {own} and own not in found
        same_type = {
            d.id for d in ds.corpus if styles[d.id]["articleType"] == styles[own]["articleType"]
        }
        assert found == same_type - {own}
    for query in sets.get("label_zh", []):
        assert query.text and not query.text.isascii()

    doc = ds.corpus[0]
    row = styles[doc.id]
    # Titles only: a category would carry the articleType the label queries name.
    assert doc.category is None and doc.text == "" and doc.title == row["productDisplayName"]
    assert doc.brand is None and doc.title == row["productDisplayName"]
    events = list(ds.to_product_events())
    assert len(events) == 29 and all(e.category_path == [] and e.images for e in events)


def test_myntra_conversion_is_reproducible(myntra_subset: Path, tmp_path: Path) -> None:
    for out in ("a", "b"):
        convert_myntra(myntra_subset, tmp_path / out, n_title=5, n_image=5, images="symlink")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    first = json.loads(
        (tmp_path / "a" / "queries.jsonl").read_text(encoding="utf-8").splitlines()[0]
    )
    assert first["_id"].startswith("label:")
