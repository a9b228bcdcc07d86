"""Photos fitted within a number of pixels a side."""

from __future__ import annotations

import torch

from shopvec.imaging.resize import fitted_size, shrink


def test_fitted_size_keeps_the_shape_and_never_enlarges() -> None:
    assert fitted_size(5470, 8000, 512) == (350, 512)
    assert fitted_size(8000, 10, 512) == (512, 1)
    assert fitted_size(80, 60, 512) == (80, 60)
    assert fitted_size(512, 512, 512) == (512, 512)


def test_shrink_gives_uint8_within_the_side_and_leaves_small_photos_alone() -> None:
    small = torch.full((3, 80, 60), 7, dtype=torch.uint8)
    assert shrink(small, 512) is small
    big = torch.full((3, 3000, 2000), 200, dtype=torch.uint8)
    out = shrink(big, 512)
    assert out.dtype == torch.uint8 and out.shape == (3, 512, 341)
    assert int(out.min()) == int(out.max()) == 200
