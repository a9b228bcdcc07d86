"""The evaluation runner on Milvus Lite: the same scores as the exact in-memory search."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopvec.encoders import HashingEncoder
from shopvec.evaluation.dataset import load_dataset
from shopvec.evaluation.runner import EvalConfig, run_evaluation
from shopvec.evaluation.stores import milvus_stores
from shopvec.imaging import ImageLoader
from shopvec.settings import ImageFetchSettings
from shopvec.store import InMemoryProductStore
from tests.unit.test_evaluation_runner import build_set

pytestmark = pytest.mark.integration


def test_milvus_lite_matches_exact_search(tmp_path: Path) -> None:
    dataset = load_dataset(build_set(tmp_path / "set"))
    # Photo queries re-ranked by their neighbours' words too: Milvus's vectors read back.
    config = EvalConfig(fusions=("weighted", "concat"), depth=20, photo_words=(False, True))
    with ImageLoader(ImageFetchSettings()) as images:
        exact = run_evaluation(dataset, HashingEncoder(), InMemoryProductStore, images, config)
        with milvus_stores() as stores:
            lite = run_evaluation(dataset, HashingEncoder(), stores, images, config)
    assert [b.name for b in lite.blocks] == [b.name for b in exact.blocks]
    assert any("visual_vec+words" in b.methods for b in exact.blocks)
    for ours, theirs in zip(lite.blocks, exact.blocks, strict=True):
        assert ours.chance == theirs.chance
        for method, evaluation in theirs.methods.items():
            assert ours.methods[method].means == pytest.approx(evaluation.means, abs=1e-6), (
                ours.name,
                method,
            )
