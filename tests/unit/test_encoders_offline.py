"""The offline encoder's image model runs folded (batch norms into convolutions, channels-last):
the same function as the published model, on the sample's real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shopvec.benchmarks.common import catalogue
from shopvec.encoders.offline import OfflineEncoder, _efficientnet_lite0
from shopvec.imaging.decode import decode_base64, decode_image


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
