"""`shopvec bench behaviour`: next-item prediction on MovieLens-100k, as a table or JSON.

Products are the films, with the fused vector of a text-only product: the text encoder's
vector of "title (year). genres" (the offline encoder's multilingual USE, or the hashing
encoder for a quick run); categories are the genres. Vectors are cached per encoder version.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np

from shopvec.encoders.base import Encoder
from shopvec.evaluation.movielens import event_type, fetch_ml100k, load_ml100k
from shopvec.evaluation.next_item import (
    Interaction,
    NextItemResult,
    VectorCatalogue,
    evaluate_next_item,
)
from shopvec.evaluation.report import render_table
from shopvec.settings import BehaviourSettings

__all__ = ["bench_behaviour", "render_bench"]

log = logging.getLogger(__name__)


def _encoder(name: Literal["offline", "hashing"]) -> Encoder:
    if name == "hashing":
        from shopvec.encoders.hashing import HashingEncoder

        return HashingEncoder(joint_dim=128)
    from shopvec.encoders.offline import OfflineEncoder

    return OfflineEncoder()


def bench_behaviour(
    cache: Path,
    config: BehaviourSettings,
    *,
    encoder: Literal["offline", "hashing"] = "offline",
) -> NextItemResult:
    started = time.perf_counter()
    movies, ratings = load_ml100k(fetch_ml100k(cache))
    enc = _encoder(encoder)
    ids = sorted(movies, key=int)
    vectors_file = cache / f"ml-100k-vectors-{enc.info.key}.npy"
    if vectors_file.is_file():
        vectors = np.load(vectors_file)
    else:
        vectors = enc.encode_texts([movies[i].text for i in ids])
        np.save(vectors_file, vectors)
    catalogue = VectorCatalogue(ids, vectors, {i: list(movies[i].genres) for i in ids})
    interactions = [Interaction(r.user, r.item, event_type(r.rating), r.timestamp) for r in ratings]
    result = evaluate_next_item(interactions, catalogue, config)
    result.extra = {
        "dataset": "ml-100k",
        "encoder": enc.info.model_id,
        "seconds": round(time.perf_counter() - started, 1),
        "weights": {
            "taste": config.weight_taste,
            "cf": config.weight_cf,
            "popularity": config.weight_popularity,
        },
    }
    return result


def render_bench(result: NextItemResult, *, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(asdict(result), indent=2)
    head = (
        f"{result.extra.get('dataset')}: {result.interactions} interactions, "
        f"{result.users} users held out; replay {result.events_per_second:,.0f} events/s; "
        f"{result.extra.get('seconds')} s in all"
    )
    table = render_table({"test (last item)": result.test, "validation": result.validation})
    return f"{head}\n{table}"
