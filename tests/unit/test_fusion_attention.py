"""Cross-modal attention over photo regions and the photo weightings of shopvec.fusion."""

from __future__ import annotations

import numpy as np
import pytest

from shopvec.encoders.base import l2_normalise
from shopvec.fusion import Fusion, attention_weights

D = 16


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return l2_normalise(rng.standard_normal((*shape, D)).astype(np.float32))


def test_attention_differs_from_the_weighted_sum_on_a_one_photo_product() -> None:
    rng = np.random.default_rng(0)
    text, photo, regions = unit(rng), unit(rng, 1), unit(rng, 1, 9)
    weighted = Fusion("weighted", 0.5, D).fuse(text, photo, regions=regions)
    attention = Fusion("attention", 0.5, D).fuse(text, photo, regions=regions)
    assert np.isclose(np.linalg.norm(attention), 1.0, atol=1e-5)
    assert not np.allclose(attention, weighted, atol=1e-3)
    # Without regions, attention over one photo is the weighted sum, as before.
    assert np.allclose(Fusion("attention", 0.5, D).fuse(text, photo), weighted, atol=1e-6)


def test_attention_weights_sum_to_one_and_favour_the_matching_region() -> None:
    rng = np.random.default_rng(1)
    text = unit(rng)
    regions = unit(rng, 2, 5)
    regions[1, 3] = text  # the region that shows what the words name
    weights = Fusion("attention", 0.5, D).region_attention(text, regions)
    assert weights.shape == (2, 5)
    assert np.isclose(weights.sum(), 1.0, atol=1e-6)
    assert (weights >= 0).all()
    assert np.unravel_index(weights.argmax(), weights.shape) == (1, 3)
    keys = unit(rng, 7)
    assert np.isclose(attention_weights(text, keys).sum(), 1.0, atol=1e-6)


def test_the_fused_photo_side_leans_towards_the_regions_the_words_match() -> None:
    rng = np.random.default_rng(2)
    text = unit(rng)
    regions = unit(rng, 1, 8)
    regions[0, 0] = l2_normalise(text + 0.3 * regions[0, 0])
    photo = l2_normalise(regions[0].mean(axis=0))[None, :]
    f = Fusion("attention", 1.0, D)  # the photo side alone
    attended = f.fuse(text, photo, regions=regions)
    assert float(attended @ text) > float(photo[0] @ text) + 0.1


def test_masked_photos_and_regions_get_no_weight() -> None:
    rng = np.random.default_rng(3)
    text = unit(rng)
    photos = unit(rng, 2)
    regions = unit(rng, 2, 4)
    regions[1, 0] = text  # would win, were it there
    mask = np.array([[True] * 4, [False] * 4])  # the second photo is missing
    f = Fusion("attention", 0.5, D)
    weights = f.region_attention(text, regions, mask)
    assert (weights[1] == 0).all()
    assert np.isclose(weights.sum(), 1.0, atol=1e-6)
    masked = f.fuse(text, photos, regions=regions, region_mask=mask)
    only_first = f.fuse(text, photos[:1], regions=regions[:1])
    assert np.allclose(masked, only_first, atol=1e-6)
    # A missing region inside a photo that is there.
    partly = np.ones((2, 4), bool)
    partly[1, 0] = False
    assert f.region_attention(text, regions, partly)[1, 0] == 0
    with pytest.raises(ValueError, match="at least one key"):
        f.region_attention(text, regions, np.zeros((2, 4), bool))


def test_attention_pools_the_confidence_of_the_regions_it_attends_to() -> None:
    rng = np.random.default_rng(4)
    text = unit(rng)
    regions = unit(rng, 1, 3)
    regions[0, 2] = text
    conf = np.array([[0.1, 0.1, 0.9]], np.float32)
    f = Fusion("attention", 0.5, D)
    _, pooled = f.fuse_with_confidence(
        text, regions[:, 0], np.array([0.3]), regions=regions, region_confidence=conf
    )
    weights = f.region_attention(text, regions)
    assert pooled is not None and np.isclose(pooled, float((weights * conf).sum()), atol=1e-6)
    assert pooled > 0.5


def test_photo_weightings() -> None:
    fixed = Fusion("weighted", 0.5, D, weighting="fixed")
    confidence = Fusion("weighted", 0.5, D)
    agreement = Fusion("weighted", 0.5, D, weighting="agreement")
    assert fixed.photo_weight(0.2) == 0.5
    assert np.isclose(confidence.photo_weight(0.2), 0.1 / 0.6)
    # Agreement scales the confidence by (1 + cos) / 2: full at cos 1, none at cos -1.
    assert np.isclose(agreement.photo_weight(0.2, 1.0), confidence.photo_weight(0.2))
    assert agreement.photo_weight(1.0, -1.0) == 0.0
    assert agreement.photo_weight(1.0, 0.0) < agreement.photo_weight(1.0, 0.5) < 0.5
    # Each weighting has a collection of its own; the confidence one keeps its old name.
    assert [f.key for f in (confidence, agreement, fixed)] == [
        "weighted50",
        "weighted50agree",
        "weighted50fixed",
    ]


def test_agreement_moves_a_disagreeing_photo_less_per_product_and_per_query() -> None:
    rng = np.random.default_rng(5)
    text = unit(rng)
    near, far = l2_normalise(text + 0.2 * unit(rng)), -text
    f = Fusion("weighted", 0.5, D, weighting="agreement")
    for photo in (near, far):
        fused = f.fuse(text, photo[None, :])
        query = f.query_vector(text, photo)
        assert np.allclose(fused, query, atol=1e-6)
    assert np.allclose(f.fuse(text, far[None, :]), text, atol=1e-6)  # cos -1: no weight
    assert float(f.fuse(text, near[None, :]) @ near) > float(text @ near)
