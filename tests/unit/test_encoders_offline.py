"""The offline encoder's image model runs folded (batch norms into convolutions, channels-last):
the same function as the published model, on the sample's real photos."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from shopvec.benchmarks.common import catalogue
from shopvec.encoders.offline import OfflineEncoder, _efficientnet_lite0
from shopvec.imaging.decode import decode_base64, decode_image
from shopvec.runtime import build_encoder
from shopvec.settings import Settings


@pytest.fixture(scope="module")
def encoder() -> OfflineEncoder:
    return OfflineEncoder(threads=1)


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return [
        decode_image(decode_base64(p.images[0].data_base64 or "", 1 << 22), 1 << 24)
        for p in catalogue(12, prefix="t")
    ]


def test_folded_model_computes_what_the_published_one_does(
    encoder: OfflineEncoder, photos: list[torch.Tensor]
) -> None:
    published = _efficientnet_lite0()
    x = encoder._preprocess(photos)
    with torch.inference_mode():
        want_map = published.extract_features(x.contiguous())
        want_logits = published._fc(want_map.mean(dim=(2, 3)))
        got_map = encoder._image_model.extract_features(x)
        got_logits = encoder._image_model._fc(got_map.mean(dim=(2, 3)))
    assert got_map.shape == want_map.shape
    torch.testing.assert_close(got_map, want_map, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)


def test_a_photo_encodes_alike_alone_and_in_a_batch(
    encoder: OfflineEncoder, photos: list[torch.Tensor]
) -> None:
    batch = encoder.encode_images(photos)
    for i in (0, 5, 11):
        alone = encoder.encode_images([photos[i]])
        np.testing.assert_allclose(alone.visual[0], batch.visual[i], atol=1e-5)
        np.testing.assert_allclose(alone.joint[0], batch.joint[i], atol=1e-5)
        assert abs(float(alone.confidence[0]) - float(batch.confidence[i])) < 1e-5
        assert alone.regions is not None and batch.regions is not None
        np.testing.assert_allclose(alone.regions[0], batch.regions[i], atol=1e-4)


def test_regions_reach_the_words_space_as_the_photo_does(
    encoder: OfflineEncoder, photos: list[torch.Tensor]
) -> None:
    got = encoder.encode_images(photos[:3])
    assert got.regions is not None and got.region_confidence is not None
    assert got.regions.shape == (3, 49, 512)
    np.testing.assert_allclose(np.linalg.norm(got.regions, axis=2), 1.0, atol=1e-5)
    assert ((got.region_confidence >= 0) & (got.region_confidence <= 1)).all()
    # The classifier's head is linear and its input is the mean of the cells: the photo's logits
    # are the mean of its cells' logits, so the cells say what the photo says, each for its part.
    x = encoder._preprocess(photos[:1])
    with torch.inference_mode():
        fmap = encoder._image_model.extract_features(x)
        head = encoder._image_model._fc
        cells = head(fmap.flatten(2).transpose(1, 2))
        whole = head(fmap.mean(dim=(2, 3)))
        torch.testing.assert_close(cells.mean(dim=1), whole, atol=1e-4, rtol=1e-4)
    # The visual vector pools the same map by a generalised mean (power 3).
    gem = fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    want = (gem / gem.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(got.visual[:1], want, atol=1e-5)
    without = OfflineEncoder(threads=1, regions=False).encode_images(photos[:1])
    assert without.regions is None
    np.testing.assert_allclose(without.joint[0], got.joint[0], atol=1e-5)


def test_threads_sharing_the_encoder_get_what_one_alone_gets(
    encoder: OfflineEncoder, photos: list[torch.Tensor]
) -> None:
    """The indexer's encoder threads share one encoder: photos are encoded side by side,
    titles one call at a time (the numpy text model is not re-entrant)."""
    titles = [p.title for p in catalogue(12, prefix="t")]
    want_photos, want_titles = encoder.encode_images(photos), encoder.encode_texts(titles)
    got: list[tuple[np.ndarray, np.ndarray]] = []

    def encode() -> None:
        for _ in range(3):
            got.append((encoder.encode_images(photos).joint, encoder.encode_texts(titles)))

    threads = [threading.Thread(target=encode) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 9
    for joint, text in got:
        np.testing.assert_allclose(joint, want_photos.joint, atol=1e-5)
        np.testing.assert_allclose(text, want_titles, atol=1e-6)


def test_an_encoder_for_queries_gives_no_regions() -> None:
    """The query worker's encoder: its photos are never fused by their regions."""
    settings = Settings()
    assert settings.encoder.fusion == "attention"
    indexer = build_encoder(settings, threads=1)
    query = build_encoder(settings, threads=1, regions=False)
    assert getattr(indexer, "gives_regions", False)
    assert not getattr(query, "gives_regions", True)
    assert query.info == indexer.info
