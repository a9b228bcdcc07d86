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


def test_similarity_orders_alike_for_unit_vectors() -> None:
    q = unit()
    c = np.stack([unit() for _ in range(20)])
    assert (np.argsort(-similarity(q, c, "COSINE")) == np.argsort(-similarity(q, c, "L2"))).all()
    assert score_from_distance(0.25, "L2") == -0.25
    assert score_from_distance(0.9, "COSINE") == 0.9
