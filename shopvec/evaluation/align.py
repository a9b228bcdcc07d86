"""Fits the photo-to-words alignment on an evaluation set's corpus and measures it on held-out
products.

Products are split by a hash of their id and a seed, so the split is the same on every run and
does not depend on the order of the corpus. The head is fitted on the photo-title pairs of one
side only; the other side becomes a smaller evaluation set of its own (its products, each
product's title as a query for its own photo, and the set's text queries judged on those
products alone), which is run through the pipeline with and without the head.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from schemas.product import ProductUpsert
from shopvec.encoders.alignment import AlignedEncoder, AlignmentConfig, FitReport, fit_alignment
from shopvec.encoders.base import Encoder
from shopvec.evaluation.dataset import EvalDataset, EvalQuery
from shopvec.evaluation.runner import (
    EvalConfig,
    EvalReport,
    Progress,
    StoreFactory,
    run_evaluation,
)
from shopvec.indexing.pipeline import ImageSource

__all__ = [
    "OWN_TITLE_SET",
    "AlignmentRun",
    "compare",
    "fit_and_measure",
    "heldout_dataset",
    "split_ids",
]

OWN_TITLE_SET = "own_title"
"""Queries made from held-out products' titles; relevant: the product itself."""


def split_ids(ids: list[str], heldout: float, seed: int) -> tuple[list[str], list[str]]:
    """(fit, held out), each in input order; a product's side depends only on its id and seed."""
    if not 0 < heldout < 1:
        raise ValueError(f"the held-out share must be in (0, 1), not {heldout}")
    fit: list[str] = []
    held: list[str] = []
    for product_id in ids:
        digest = hashlib.sha256(f"{seed}\0{product_id}".encode()).digest()
        (held if int.from_bytes(digest[:8], "big") < heldout * 2**64 else fit).append(product_id)
    return fit, held


def _title(event: ProductUpsert) -> str:
    return event.title or event.description


def heldout_dataset(dataset: EvalDataset, keep: set[str]) -> EvalDataset:
    """The corpus cut to ``keep``; queries: own titles, plus text queries judged on ``keep``."""
    corpus = [doc for doc in dataset.corpus if doc.id in keep]
    titles: dict[str, list[str]] = {}
    for doc in corpus:
        if doc.image is not None and (doc.title or doc.text):
            titles.setdefault(doc.title or doc.text, []).append(doc.id)
    queries: list[EvalQuery] = []
    qrels: dict[str, dict[str, int]] = {}
    # A title two products share cannot single out either photo.
    for title, ids in titles.items():
        if len(ids) == 1:
            query_id = f"{OWN_TITLE_SET}:{ids[0]}"
            queries.append(EvalQuery(query_id, text=title))
            qrels[query_id] = {ids[0]: 1}
    for query in dataset.queries:
        if query.image is not None or not query.text:
            continue  # the head moves only the photos' joint vectors: photo queries see no change
        grades = {d: g for d, g in dataset.qrels.get(query.id, {}).items() if d in keep}
        if any(g > 0 for g in grades.values()):
            queries.append(replace(query, exclude=frozenset(query.exclude & keep)))
            qrels[query.id] = grades
    return EvalDataset(dataset.root, corpus, queries, qrels)


def pair_vectors(
    dataset: EvalDataset,
    ids: set[str],
    encoder: Encoder,
    images: ImageSource,
    *,
    batch: int = 32,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Photo (visual, joint) and title vectors of the products in ``ids`` with both."""
    visual: list[np.ndarray] = []
    joint: list[np.ndarray] = []
    texts: list[np.ndarray] = []
    used: list[str] = []
    events = [e for e in dataset.to_product_events() if e.id in ids and e.images and _title(e)]
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        loaded = images.load_many([e.images[0] for e in chunk])
        good = [(e, t) for e, t in zip(chunk, loaded, strict=True) if not isinstance(t, Exception)]
        if good:
            vectors = encoder.encode_images([t for _, t in good])
            visual.append(vectors.visual)
            joint.append(vectors.joint)
            texts.append(encoder.encode_texts([_title(e) for e, _ in good]))
            used.extend(e.id for e, _ in good)
        if progress is not None:
            progress(len(chunk))
    if not used:
        raise ValueError("no product has both a photo and a title to fit on")
    return np.concatenate(visual), np.concatenate(joint), np.concatenate(texts), used


@dataclass
class AlignmentRun:
    fit: FitReport
    fit_ids: list[str]
    heldout_ids: list[str]
    before: EvalReport
    after: EvalReport
    path: Path | None = None


def fit_and_measure(
    dataset: EvalDataset,
    encoder: Encoder,
    images: ImageSource,
    stores: StoreFactory,
    *,
    config: AlignmentConfig | None = None,
    heldout: float = 0.2,
    split_seed: int = 0,
    eval_config: EvalConfig | None = None,
    progress: Progress | None = None,
) -> AlignmentRun:
    """Fits on one side of the split and evaluates both encoders on the other."""
    fit_ids, held_ids = split_ids([d.id for d in dataset.corpus], heldout, split_seed)
    if not held_ids or not fit_ids:
        raise ValueError("the split left one side empty: the corpus is too small")
    bar = progress(len(fit_ids), "encode fit pairs") if progress is not None else None
    try:
        visual, joint, texts, _ = pair_vectors(
            dataset, set(fit_ids), encoder, images, progress=bar.update if bar else None
        )
    finally:
        if bar is not None:
            bar.close()
    fitted = fit_alignment(visual, joint, texts, base=encoder.info, config=config)
    aligned = AlignedEncoder(encoder, fitted.alignment)

    held = heldout_dataset(dataset, set(held_ids))
    eval_config = eval_config or EvalConfig(
        fusions=("weighted",), scenarios=("text2image", "text2text", "text2product")
    )
    # Separate aliases: each run searches the collections it filled itself.
    prefix = eval_config.alias_prefix
    before = run_evaluation(
        held,
        encoder,
        stores,
        images,
        replace(eval_config, alias_prefix=f"{prefix}_before"),
        progress=progress,
    )
    after = run_evaluation(
        held,
        aligned,
        stores,
        images,
        replace(eval_config, alias_prefix=f"{prefix}_after"),
        progress=progress,
    )
    return AlignmentRun(fitted, fit_ids, held_ids, before, after)


def compare(
    before: EvalReport, after: EvalReport
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, float]]]:
    """Results and chance levels with a "before" and an "after" row per method and block."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    first, second = before.results(), after.results()
    for block, methods in first.items():
        rows: dict[str, dict[str, float]] = {}
        for method, values in methods.items():
            rows[f"{method} before"] = values
            if method in second.get(block, {}):
                rows[f"{method} after"] = second[block][method]
        results[block] = rows
    return results, before.chance()
