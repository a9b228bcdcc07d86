import numpy as np
import pytest

from shopvec.encoders.base import l2_normalise
from shopvec.fusion import Fusion
from shopvec.similarity import score_from_distance, similarity

rng = np.random.default_rng(0)


def unit(d: int = 8) -> np.ndarray:
    return l2_normalise(rng.standard_normal(d))


@pytest.mark.parametrize("method", ["weighted", "concat", "attention"])
def test_fused_vectors_are_unit_and_handle_missing_modalities(method: str) -> None:
    f = Fusion(method, 0.3, 8)  # type: ignore[arg-type]
    t, photos = unit(), np.stack([unit(), unit()])
    for fused in (f.fuse(t, photos), f.fuse(t, None), f.fuse(None, photos)):
        assert fused.shape == (f.fused_dim,)
        assert np.isclose(np.linalg.norm(fused), 1.0, atol=1e-5)
        assert np.isfinite(fused).all()
    with pytest.raises(ValueError):
        f.fuse(None, None)


def test_concat_scores_as_the_weighted_mix_of_modalities() -> None:
    w = 0.3
    f = Fusion("concat", w, 8)
    t, i = unit(), unit()
    q_text, q_image = unit(), unit()
    product = f.fuse(t, i[None, :])
    query = f.query_vector(q_text, q_image)
    expected = w * float(q_image @ i) + (1 - w) * float(q_text @ t)
    assert np.isclose(float(query @ product), expected, atol=1e-5)


def test_missing_modality_is_replaced_by_the_present_one() -> None:
    f = Fusion("weighted", 0.5, 8)
    t = unit()
    assert np.allclose(f.fuse(t, None), t, atol=1e-6)


def test_attention_prefers_the_photo_that_matches_the_title() -> None:
    f = Fusion("attention", 1.0, 8)
    t = unit()
    other = unit()
    photos = np.stack([other, l2_normalise(t + 0.05 * other)])
    pooled = f.fuse(t, photos)
    assert float(pooled @ photos[1]) > float(pooled @ photos[0])


def test_photo_confidence_scales_the_photo_weight() -> None:
    f = Fusion("weighted", 0.5, 8)
    t, i = unit(), unit()
    assert f.photo_weight(None) == f.photo_weight(1.0) == 0.5
    assert np.isclose(f.photo_weight(0.5), 0.25 / 0.75)
    assert f.photo_weight(0.0) == 0.0
    assert Fusion("weighted", 1.0, 8).photo_weight(0.0) == 1.0  # photos only, as configured
    assert np.allclose(f.fuse(t, i[None, :]), f.fuse(t, i[None, :], np.array([1.0])))
    sure, unsure = (f.fuse(t, i[None, :], np.array([c])) for c in (0.9, 0.2))
    assert float(unsure @ t) > float(sure @ t)
    assert np.allclose(f.fuse(t, i[None, :], np.array([0.0])), t, atol=1e-6)
    # A photo alone is the photo, however unsure: there is nothing else to weigh it against.
    assert np.allclose(f.fuse(None, i[None, :], np.array([0.1])), i, atol=1e-6)


@pytest.mark.parametrize("method", ["weighted", "concat", "attention"])
def test_queries_and_products_mix_alike_with_confidence(method: str) -> None:
    f = Fusion(method, 0.4, 8)  # type: ignore[arg-type]
    t, photos = unit(), np.stack([unit(), unit()])
    fused, pooled = f.fuse_with_confidence(t, photos, np.array([0.2, 0.6]))
    assert pooled is not None and 0.2 <= pooled <= 0.6
    assert np.isclose(np.linalg.norm(fused), 1.0, atol=1e-5)
    assert f.fuse_with_confidence(t, None)[1] is None
    query = f.query_vector(t, photos[0], 0.3)
    assert query.shape == (f.fused_dim,)
    assert np.isclose(np.linalg.norm(query), 1.0, atol=1e-5)


def test_similarity_orders_alike_for_unit_vectors() -> None:
    q = unit()
    c = np.stack([unit() for _ in range(20)])
    assert (np.argsort(-similarity(q, c, "COSINE")) == np.argsort(-similarity(q, c, "L2"))).all()
    assert score_from_distance(0.25, "L2") == -0.25
    assert score_from_distance(0.9, "COSINE") == 0.9
