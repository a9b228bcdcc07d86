"""Colour words from generated photos: the product region's colour, never the background's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import shopvec.imaging.colour as colour_module
from shopvec.imaging.colour import (
    _REF_LAB,
    _REF_NAME,
    PALETTE,
    _lookup,
    _nearest_names,
    _srgb_to_lab,
    colour_names,
    colour_words,
    colour_words_many,
)


def _photo(background: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> torch.Tensor:
    h, w = size
    return torch.tensor(background, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).clone()


def _paint(image: torch.Tensor, colour: tuple[int, int, int], box: tuple[int, int, int, int]):
    top, left, bottom, right = box
    image[:, top:bottom, left:right] = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)
    return image


def test_red_square_on_white_is_red_and_the_background_is_not_reported() -> None:
    image = _paint(_photo((255, 255, 255)), (210, 25, 35), (20, 15, 60, 45))
    names = [c.english for c in colour_names(image)]
    assert names == ["red"]
    assert colour_words([image]) == "red 红色"


def test_a_light_grey_background_is_not_the_product() -> None:
    image = _paint(_photo((235, 235, 235)), (30, 60, 200), (10, 10, 70, 50))
    assert [c.english for c in colour_names(image)] == ["blue"]


def test_two_coloured_product_names_both_largest_first() -> None:
    image = _photo((255, 255, 255))
    _paint(image, (15, 15, 15), (10, 10, 70, 30))  # black left half, the larger
    _paint(image, (245, 210, 40), (10, 30, 50, 50))  # yellow right part
    assert [c.english for c in colour_names(image)] == ["black", "yellow"]


def test_white_product_filling_a_white_frame_is_white() -> None:
    # Nothing stands out from the border: the middle of the photo is taken as the product.
    assert [c.english for c in colour_names(_photo((250, 250, 250)))] == ["white"]


def test_large_photo_is_reduced_and_named_alike() -> None:
    image = _paint(_photo((255, 255, 255), (1200, 900)), (30, 130, 60), (300, 200, 900, 700))
    assert [c.english for c in colour_names(image)] == ["green"]


def test_words_of_several_photos_name_each_colour_once() -> None:
    red = _paint(_photo((255, 255, 255)), (210, 25, 35), (20, 15, 60, 45))
    assert colour_words([red, red.clone()]) == "red 红色"
    assert colour_words([]) == ""


def test_many_products_at_once_get_the_words_each_gets_alone() -> None:
    rng = torch.Generator().manual_seed(1)
    noisy = torch.randint(0, 256, (3, 120, 90), dtype=torch.uint8, generator=rng)
    red = _paint(_photo((255, 255, 255)), (210, 25, 35), (20, 15, 60, 45))
    blue = _paint(_photo((240, 240, 240), (300, 200)), (40, 90, 200), (50, 40, 250, 160))
    green = _paint(_photo((20, 20, 20), (64, 64)), (40, 150, 60), (10, 10, 54, 54))
    empty = torch.zeros((3, 0, 0), dtype=torch.uint8)
    products = [[red], [blue, green], [], [noisy, red], [empty], [green, empty, blue]]
    assert colour_words_many(products) == [colour_words(p) for p in products]
    assert colour_words_many([[red], [blue, green]])[1] == "blue 蓝色 green 绿色"


def test_photos_of_a_size_named_in_small_chunks_get_the_same_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = torch.Generator().manual_seed(3)
    photos = [
        [torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8, generator=rng)] for _ in range(9)
    ]
    photos += [[_paint(_photo((255, 255, 255)), (210, 25, 35), (20, 15, 60, 45))]]
    whole = colour_words_many(photos)
    monkeypatch.setattr(colour_module, "_CHUNK_PIXELS", 2 * 40 * 30)
    assert colour_words_many(photos) == whole


def test_palette_names_are_unique_in_both_languages() -> None:
    assert len({c.english for c in PALETTE}) == len(PALETTE)
    assert len({c.chinese for c in PALETTE}) == len(PALETTE)


def test_empty_or_odd_tensors_give_no_words() -> None:
    assert colour_names(torch.zeros((3, 0, 0), dtype=torch.uint8)) == []
    assert colour_names(torch.zeros((1, 8, 8), dtype=torch.uint8)) == []


def test_nearest_reference_is_the_plain_formulas_to_the_last_bit() -> None:
    pixels = np.random.default_rng(0).uniform([0, -100, -100], [100, 100, 100], (20_000, 3))
    plain = ((pixels[:, None, :] - _REF_LAB[None, :, :]) ** 2).sum(axis=-1)
    assert np.array_equal(_nearest_names(pixels), _REF_NAME[np.argmin(plain, axis=1)])


def test_the_table_gives_the_exact_conversion_on_its_levels_and_a_close_one_between() -> None:
    levels = np.random.default_rng(1).integers(0, 64, (5_000, 3)) / 63
    lab, names = _lookup(levels)
    exact = _srgb_to_lab(levels)
    assert np.allclose(lab, exact, atol=1e-3)
    assert np.array_equal(names, _nearest_names(exact))
    # Between levels a colour moves by at most half a level a channel: a few units of CIELAB
    # (most in the darkest shades), against 12 between a product and its background.
    rgb = np.random.default_rng(2).uniform(0, 1, (20_000, 3))
    moved = np.linalg.norm(_lookup(rgb)[0] - _srgb_to_lab(rgb), axis=1)
    assert moved.max() < 4.0 and np.median(moved) < 1.0


def test_values_outside_the_channel_range_are_taken_as_its_ends() -> None:
    lab, names = _lookup(np.array([[-0.5, 0.0, 2.0], [0.0, 0.0, 1.0]]))
    assert np.array_equal(lab[0], lab[1]) and names[0] == names[1]
