"""Evaluation sets on disk: the BEIR layout with product photos, read and written.

A folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``, ``image`` as a path relative to the
folder, optional ``category`` and ``brand``), ``queries.jsonl`` (``_id``, ``text`` and/or
``image``, optional ``exclude``: ids to drop from that query's ranking) and ``qrels/test.tsv``
(``query-id``, ``corpus-id``, ``score``, after a header line). A query id may carry a prefix
before ``:`` naming its query set, so that each set can be scored on its own.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.product import ProductImage, ProductUpsert

__all__ = [
    "CorpusDoc",
    "DatasetError",
    "EvalDataset",
    "EvalQuery",
    "load_dataset",
    "write_jsonl",
    "write_qrels",
]

QRELS_HEADER = ("query-id", "corpus-id", "score")
EVENT_TIME = datetime(2024, 1, 1, tzinfo=UTC)
"""Fixed, so that the same folder always yields the same events."""


class DatasetError(ValueError):
    """The folder does not follow the layout; the message names the file and line."""


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    title: str = ""
    text: str = ""
    image: Path | None = None
    category: str | None = None
    brand: str | None = None


@dataclass(frozen=True)
class EvalQuery:
    id: str
    text: str | None = None
    image: Path | None = None
    exclude: frozenset[str] = frozenset()

    @property
    def prefix(self) -> str:
        """The query set this query belongs to ("" when its id has no prefix)."""
        return self.id.split(":", 1)[0] if ":" in self.id else ""


@dataclass(frozen=True)
class EvalDataset:
    root: Path
    corpus: list[CorpusDoc]
    queries: list[EvalQuery]
    qrels: dict[str, dict[str, int]]

    def query_sets(self) -> dict[str, list[EvalQuery]]:
        """Queries grouped by id prefix, in file order."""
        sets: dict[str, list[EvalQuery]] = {}
        for query in self.queries:
            sets.setdefault(query.prefix, []).append(query)
        return sets

    def qrels_for(self, queries: Iterable[EvalQuery]) -> dict[str, dict[str, int]]:
        """The judgements of just these queries, as ``evaluate`` wants them."""
        return {q.id: self.qrels[q.id] for q in queries if q.id in self.qrels}

    def exclusions(self) -> dict[str, frozenset[str]]:
        return {q.id: q.exclude for q in self.queries if q.exclude}

    def to_product_events(self, version: int = 1) -> Iterator[ProductUpsert]:
        """One upsert per corpus document, its photo inline, in corpus order."""
        for doc in self.corpus:
            images = []
            if doc.image is not None:
                data = base64.b64encode(doc.image.read_bytes()).decode("ascii")
                images.append(ProductImage(data_base64=data))
            try:
                yield ProductUpsert(
                    id=doc.id,
                    version=version,
                    updated_at=EVENT_TIME,
                    title=doc.title,
                    description=doc.text,
                    category_path=_category_path(doc.category),
                    brand=doc.brand or None,
                    images=images,
                )
            except ValidationError as err:
                problem = f"corpus document {doc.id!r} is not a valid product: {err}"
                raise DatasetError(problem) from err


def _category_path(category: str | None) -> list[str]:
    if not category:
        return []
    return [part.strip() for part in re.split(r"[/>]", category) if part.strip()]


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError(f"missing {path.name} in {path.parent}")
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path.name} line {number}: not valid JSON ({err})") from err
            if not isinstance(row, dict):
                raise DatasetError(f"{path.name} line {number}: expected a JSON object")
            yield number, row


def _field(row: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = row.get(key)
    if value is None or value == "":
        if required:
            raise DatasetError(f"{where}: missing {key!r}")
        return None
    # BEIR sets sometimes store numeric ids; text is what the rest of the pipeline expects.
    if isinstance(value, int) and not isinstance(value, bool) and key == "_id":
        return str(value)
    if not isinstance(value, str):
        raise DatasetError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _image(root: Path, row: dict[str, Any], where: str) -> Path | None:
    relative = _field(row, "image", where)
    if relative is None:
        return None
    path = root / relative
    if not path.is_file():
        raise DatasetError(f"{where}: image {relative!r} not found under {root}")
    return path


def _load_corpus(root: Path) -> list[CorpusDoc]:
    docs: dict[str, CorpusDoc] = {}
    for number, row in _read_jsonl(root / "corpus.jsonl"):
        where = f"corpus.jsonl line {number}"
        doc_id = _field(row, "_id", where, required=True) or ""
        if doc_id in docs:
            raise DatasetError(f"{where}: duplicate _id {doc_id!r}")
        doc = CorpusDoc(
            id=doc_id,
            title=_field(row, "title", where) or "",
            text=_field(row, "text", where) or "",
            image=_image(root, row, where),
            category=_field(row, "category", where),
            brand=_field(row, "brand", where),
        )
        if not (doc.title or doc.text or doc.image):
            raise DatasetError(f"{where}: a document needs a title, a text or an image")
        docs[doc_id] = doc
    return list(docs.values())


def _load_queries(root: Path) -> list[EvalQuery]:
    queries: dict[str, EvalQuery] = {}
    for number, row in _read_jsonl(root / "queries.jsonl"):
        where = f"queries.jsonl line {number}"
        query_id = _field(row, "_id", where, required=True) or ""
        if query_id in queries:
            raise DatasetError(f"{where}: duplicate _id {query_id!r}")
        exclude = row.get("exclude", [])
        if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
            raise DatasetError(f"{where}: 'exclude' must be a list of document ids")
        query = EvalQuery(
            query_id, _field(row, "text", where), _image(root, row, where), frozenset(exclude)
        )
        if query.text is None and query.image is None:
            raise DatasetError(f"{where}: a query needs a text or an image")
        queries[query_id] = query
    return list(queries.values())


def _load_qrels(path: Path, query_ids: set[str], doc_ids: set[str]) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise DatasetError(f"missing qrels/{path.name} in {path.parent.parent}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8-sig") as lines:
        header, expected = next(lines, "").rstrip("\r\n"), "\t".join(QRELS_HEADER)
        if header != expected:
            raise DatasetError(
                f"qrels/{path.name} line 1: expected the header {expected!r}, got {header!r}"
            )
        for number, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            where = f"qrels/{path.name} line {number}"
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) != 3:
                raise DatasetError(f"{where}: expected 3 tab-separated columns, got {len(cells)}")
            query_id, doc_id, score = cells
            if query_id not in query_ids:
                raise DatasetError(f"{where}: unknown query-id {query_id!r}")
            if doc_id not in doc_ids:
                raise DatasetError(f"{where}: unknown corpus-id {doc_id!r}")
            try:
                grade = int(score)
            except ValueError:
                raise DatasetError(f"{where}: score {score!r} is not an integer") from None
            if doc_id in qrels.setdefault(query_id, {}):
                raise DatasetError(f"{where}: ({query_id!r}, {doc_id!r}) judged twice")
            qrels[query_id][doc_id] = grade
    return qrels


def load_dataset(root: str | Path, split: str = "test") -> EvalDataset:
    """Reads and checks a whole folder; raises ``DatasetError`` at the first problem."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"no evaluation folder at {root}")
    corpus = _load_corpus(root)
    queries = _load_queries(root)
    qrels = _load_qrels(
        root / "qrels" / f"{split}.tsv", {q.id for q in queries}, {d.id for d in corpus}
    )
    return EvalDataset(root, corpus, queries, qrels)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object a line, UTF-8 kept readable (queries may be in any language)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_qrels(path: Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        out.write("\t".join(QRELS_HEADER) + "\n")
        for query_id, grades in qrels.items():
            for doc_id, grade in grades.items():
                if any(ch in ident for ident in (query_id, doc_id) for ch in "\t\r\n"):
                    raise ValueError(f"ids in qrels cannot hold tabs or newlines: {query_id!r}")
                out.write(f"{query_id}\t{doc_id}\t{grade}\n")
