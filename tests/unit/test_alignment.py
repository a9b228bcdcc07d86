"""The photo-to-words alignment: fitting where a linear map exists, saving, loading, wrapping,
and the held-out split it is measured on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shopvec.encoders import Encoder, EncoderInfo, HashingEncoder, l2_normalise
from shopvec.encoders.alignment import (
    AlignedEncoder,
    Alignment,
    AlignmentConfig,
    fit_alignment,
    load_alignment,
)
from shopvec.evaluation.align import OWN_TITLE_SET, heldout_dataset, split_ids
from shopvec.evaluation.dataset import CorpusDoc, EvalDataset, EvalQuery

BASE = EncoderInfo("synthetic", "1", joint_dim=16, visual_dim=24)


def synthetic_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Titles t; photos whose visual vectors are a fixed linear image of t plus noise, and whose
    joint vectors are unrelated to t (a zero-shot map that knows nothing of this catalogue)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).standard_normal((BASE.visual_dim, BASE.joint_dim))
    texts = l2_normalise(rng.standard_normal((n, BASE.joint_dim)))
    visual = l2_normalise(texts @ mixing.T + 0.05 * rng.standard_normal((n, BASE.visual_dim)))
    joint = l2_normalise(rng.standard_normal((n, BASE.joint_dim)))
    return visual, joint, texts


def recall_at_1(images: np.ndarray, texts: np.ndarray) -> float:
    """Title to photo: how often a title's nearest photo is its own."""
    return float(np.mean(np.argmax(texts @ images.T, axis=1) == np.arange(len(texts))))


@pytest.fixture(scope="module")
def fitted() -> Alignment:
    visual, joint, texts = synthetic_pairs(400, seed=1)
    # A small problem: a larger step and smaller batches than the defaults reach it quickly.
    config = AlignmentConfig(epochs=200, learning_rate=1e-2, batch_size=64, patience=20)
    report = fit_alignment(visual, joint, texts, base=BASE, config=config)
    assert report.validation_loss_after < report.validation_loss_before
    assert 1 <= report.best_epoch <= report.epochs
    return report.alignment


def test_fit_improves_recall_on_unseen_pairs(fitted: Alignment) -> None:
    visual, joint, texts = synthetic_pairs(100, seed=2)
    before = recall_at_1(joint, texts)
    after = recall_at_1(fitted.apply(visual, joint), texts)
    assert before < 0.1
    assert after > 0.8


def test_unfitted_head_is_the_encoder() -> None:
    visual, joint, _ = synthetic_pairs(50, seed=3)
    start = np.zeros((16, 40), np.float32)
    start[:, 24:] = np.eye(16)
    head = Alignment(start, "synthetic", "1", AlignmentConfig())
    np.testing.assert_allclose(head.apply(visual, joint), joint, atol=1e-6)


def test_save_load_round_trip_keeps_version(fitted: Alignment, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "models" / f"alignment-{fitted.version}.pt")
    loaded = load_alignment(path)
    assert loaded.version == fitted.version
    np.testing.assert_array_equal(loaded.weight, fitted.weight)
    assert loaded.config == fitted.config
    assert loaded.fit["best_epoch"] == fitted.fit["best_epoch"]

    # A version is a digest of the weights: other weights, another version.
    moved = Alignment(fitted.weight * 1.01, "synthetic", "1", fitted.config)
    assert moved.version != fitted.version
    # A file whose weights were changed after saving is refused.
    payload = torch.load(path, weights_only=True)
    payload["weight"] = payload["weight"] * 2
    torch.save(payload, path)
    with pytest.raises(ValueError, match="do not match"):
        load_alignment(path)


def test_aligned_encoder(tmp_path: Path) -> None:
    from PIL import Image

    encoder: Encoder = HashingEncoder(joint_dim=16, visual_dim=24)
    info = encoder.info
    weight = np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32)
    alignment = Alignment(weight, info.model_id, info.version, AlignmentConfig())
    aligned = AlignedEncoder(encoder, alignment)
    assert isinstance(aligned, Encoder)
    assert aligned.info.version == f"{info.version}.a{alignment.version}"
    assert aligned.info.key != info.key
    assert (aligned.info.joint_dim, aligned.info.visual_dim) == (16, 24)

    pixels = np.array(Image.new("RGB", (8, 6), (200, 10, 10)))
    photo = torch.from_numpy(pixels).permute(2, 0, 1)
    plain, moved = encoder.encode_images([photo]), aligned.encode_images([photo])
    np.testing.assert_array_equal(moved.visual, plain.visual)
    np.testing.assert_allclose(moved.joint, alignment.apply(plain.visual, plain.joint))
    np.testing.assert_allclose(np.linalg.norm(moved.joint, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(aligned.encode_texts(["red"]), encoder.encode_texts(["red"]))
    assert aligned.encode_images([]).joint.shape == (0, 16)

    other = Alignment(weight, info.model_id, "another-version", AlignmentConfig())
    with pytest.raises(ValueError, match="fitted on"):
        AlignedEncoder(encoder, other)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        AlignmentConfig(validation=1.0)
    with pytest.raises(ValueError):
        AlignmentConfig(temperature=0)
    visual, joint, texts = synthetic_pairs(3, seed=4)
    with pytest.raises(ValueError, match="too few"):
        fit_alignment(visual, joint, texts, base=BASE)


def test_split_is_stable_and_order_free() -> None:
    ids = [str(i) for i in range(1000)]
    fit, held = split_ids(ids, 0.2, seed=0)
    assert sorted(fit + held, key=int) == ids and not set(fit) & set(held)
    assert 150 < len(held) < 250
    _, again_held = split_ids(list(reversed(ids)), 0.2, seed=0)
    assert set(again_held) == set(held)
    assert set(split_ids(ids, 0.2, seed=1)[1]) != set(held)


def test_heldout_dataset(tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    photo.write_bytes(b"")
    corpus = [
        CorpusDoc("a", title="red shirt", image=photo),
        CorpusDoc("b", title="red shirt", image=photo),  # the same title: no own-title query
        CorpusDoc("c", title="blue shoe", image=photo),
        CorpusDoc("d", title="green hat", image=photo),
    ]
    queries = [
        EvalQuery("label:red", text="red"),
        EvalQuery("label:green", text="green"),
        EvalQuery("image:a", image=photo, exclude=frozenset({"a"})),
    ]
    qrels = {"label:red": {"a": 1, "d": 1}, "label:green": {"d": 1}, "image:a": {"b": 1}}
    held = heldout_dataset(EvalDataset(tmp_path, corpus, queries, qrels), {"a", "b", "c"})
    assert [d.id for d in held.corpus] == ["a", "b", "c"]
    assert [q.id for q in held.queries] == [f"{OWN_TITLE_SET}:c", "label:red"]
    assert held.qrels == {f"{OWN_TITLE_SET}:c": {"c": 1}, "label:red": {"a": 1}}
