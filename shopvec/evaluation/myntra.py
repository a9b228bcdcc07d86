"""Turns the Myntra fashion sample (``styles.csv`` and ``images/<id>.jpg``) into an evaluation set.

Query sets, told apart by the prefix of their ids:

- ``label:``     "<baseColour> <articleType>" (e.g. "Blue Tshirts"); relevant: products with both.
- ``label_zh:``  the same in Chinese, for the colours and types of a small dictionary.
- ``title:``     a product's title; relevant: that product (text to its own photo).
- ``image:``     a product's photo; relevant: the other products of its articleType. The product
  itself is listed under ``exclude`` so that finding its own photo earns nothing.

Run it as ``shopvec convert myntra SOURCE_FOLDER DEST_FOLDER``.
"""

from __future__ import annotations

import csv
import random
import re
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shopvec.evaluation.dataset import DatasetError, write_jsonl, write_qrels

__all__ = ["COLOURS_ZH", "TYPES_ZH", "ConversionSummary", "convert_myntra"]

COLUMNS = (
    "id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season",
    "year", "usage", "productDisplayName",
)  # fmt: skip

COLOURS_ZH = {
    "Black": "黑色", "White": "白色", "Blue": "蓝色", "Grey": "灰色", "Brown": "棕色",
    "Red": "红色", "Green": "绿色", "Navy Blue": "藏青色", "Pink": "粉色", "Yellow": "黄色",
    "Purple": "紫色", "Orange": "橙色", "Beige": "米色",
}  # fmt: skip
TYPES_ZH = {
    "Tshirts": "T恤", "Shirts": "衬衫", "Casual Shoes": "休闲鞋", "Sports Shoes": "运动鞋",
    "Tops": "上衣", "Heels": "高跟鞋", "Flip Flops": "人字拖", "Sandals": "凉鞋",
    "Shorts": "短裤", "Formal Shoes": "正装鞋", "Flats": "平底鞋", "Dresses": "连衣裙",
    "Jeans": "牛仔裤", "Jackets": "夹克", "Sweatshirts": "卫衣", "Trousers": "长裤",
}  # fmt: skip


@dataclass
class ConversionSummary:
    products: int = 0
    skipped_without_image: list[str] = field(default_factory=list)
    queries: dict[str, int] = field(default_factory=dict)
    """Number of queries per prefix."""


def _read_styles(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"missing styles.csv in {path.parent}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"styles.csv lacks the columns {missing}")
        rows = []
        for row in reader:
            # The full Kaggle file has titles with unquoted commas: their tail lands in the
            # overflow list that DictReader keys by None, and belongs back in the title.
            extra = row.pop(None, None)
            if extra:
                row["productDisplayName"] = ",".join([row["productDisplayName"], *extra])
            rows.append({k: (v or "").strip() for k, v in row.items()})
    return rows


def _slug(*parts: str) -> str:
    # Parts are joined by "--", which no part holds, so ("Navy Blue", "X") and ("Navy", "Blue X")
    # stay apart.
    return "--".join(re.sub(r"[^0-9a-z]+", "-", p.lower()).strip("-") for p in parts)


def _place_image(src: Path, dest: Path, how: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    if how == "symlink":
        dest.symlink_to(src.resolve())
    elif how == "hardlink":
        dest.hardlink_to(src)
    else:
        shutil.copyfile(src, dest)


def convert_myntra(
    source: str | Path,
    dest: str | Path,
    *,
    seed: int = 13,
    n_title: int = 200,
    n_image: int = 200,
    min_label_size: int = 2,
    images: Literal["copy", "symlink", "hardlink"] = "copy",
) -> ConversionSummary:
    """Writes ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv`` and ``images/`` to ``dest``.

    Sampling uses ``random.Random(seed)`` over id-sorted candidates, so the same input always
    gives the same queries.
    """
    source, dest = Path(source), Path(dest)
    summary = ConversionSummary()
    products = []
    seen: set[str] = set()
    for row in _read_styles(source / "styles.csv"):
        if not row["id"] or row["id"] in seen:
            raise DatasetError(f"styles.csv: empty or repeated id {row['id']!r}")
        seen.add(row["id"])
        image = source / "images" / f"{row['id']}.jpg"
        if not image.is_file():
            summary.skipped_without_image.append(row["id"])
            continue
        _place_image(image, dest / "images" / image.name, images)
        products.append(row)
    # Numeric ids in numeric order, whatever the order of the file.
    products.sort(key=lambda r: (len(r["id"]), r["id"]))
    position = {p["id"]: i for i, p in enumerate(products)}
    summary.products = len(products)

    corpus = [
        {
            "_id": p["id"],
            "title": p["productDisplayName"],
            # No body text: the labels that queries are built from would leak into it.
            "text": "",
            "image": f"images/{p['id']}.jpg",
            # No category either: its last level is the articleType the label queries name, and
            # full-text search matches a product's category path word for word.
            # The first word of a title is not reliably the brand ("U.S. Polo Assn."), so none.
        }
        for p in products
    ]
    queries: list[dict[str, Any]] = []
    qrels: dict[str, dict[str, int]] = {}

    def add(query: dict[str, Any], relevant: Sequence[str]) -> None:
        if query["_id"] in qrels:
            raise DatasetError(f"two queries would share the id {query['_id']!r}")
        queries.append(query)
        qrels[query["_id"]] = {doc_id: 1 for doc_id in relevant}
        prefix = query["_id"].split(":", 1)[0]
        summary.queries[prefix] = summary.queries.get(prefix, 0) + 1

    by_label: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_type: dict[str, list[str]] = defaultdict(list)
    by_title: dict[str, list[str]] = defaultdict(list)
    for p in products:
        if p["baseColour"] and p["articleType"]:
            by_label[p["baseColour"], p["articleType"]].append(p["id"])
        if p["articleType"]:
            by_type[p["articleType"]].append(p["id"])
        if p["productDisplayName"]:
            by_title[p["productDisplayName"]].append(p["id"])

    labels = sorted(k for k, ids in by_label.items() if len(ids) >= min_label_size)
    for colour, kind in labels:
        add(
            {"_id": f"label:{_slug(colour, kind)}", "text": f"{colour} {kind}"},
            by_label[colour, kind],
        )
    for colour, kind in labels:
        if colour in COLOURS_ZH and kind in TYPES_ZH:
            add(
                {
                    "_id": f"label_zh:{_slug(colour, kind)}",
                    "text": COLOURS_ZH[colour] + TYPES_ZH[kind],
                },
                by_label[colour, kind],
            )

    rng = random.Random(seed)

    def sample(pool: list[dict[str, str]], n: int) -> list[dict[str, str]]:
        return sorted(rng.sample(pool, min(n, len(pool))), key=lambda p: position[p["id"]])

    # A title shared by several products cannot single out its own photo, so those are left out.
    titled = [p for p in products if len(by_title.get(p["productDisplayName"], ())) == 1]
    for p in sample(titled, n_title):
        add({"_id": f"title:{p['id']}", "text": p["productDisplayName"]}, [p["id"]])

    # Only a product with at least one other of its type has something to find.
    typed = [p for p in products if len(by_type.get(p["articleType"], ())) >= 2]
    for p in sample(typed, n_image):
        others = [i for i in by_type[p["articleType"]] if i != p["id"]]
        add(
            {"_id": f"image:{p['id']}", "image": f"images/{p['id']}.jpg", "exclude": [p["id"]]},
            others,
        )

    write_jsonl(dest / "corpus.jsonl", corpus)
    write_jsonl(dest / "queries.jsonl", queries)
    write_qrels(dest / "qrels" / "test.tsv", qrels)
    # The sample's licence asks that its attribution travel with every copy.
    if (source / "README.md").is_file():
        shutil.copyfile(source / "README.md", dest / "SOURCE.md")
    return summary
