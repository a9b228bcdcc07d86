"""decode_image and decode_base64: formats, orientation, transparency, and hostile input."""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib

import pytest
import torch
from PIL import Image

from shopvec.imaging import (
    ImageTooLarge,
    ImageUndecodable,
    decode_base64,
    decode_image,
)
from shopvec.imaging import decode as decode_mod

RED, BLUE = (255, 0, 0), (0, 0, 255)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def halves(width: int = 40, height: int = 20, mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image.convert(mode)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims the given size: a decompression bomb as far as any
    decoder that trusts the header is concerned."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    rows = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def close_to(pixel: torch.Tensor, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool((pixel.to(torch.int32) - torch.tensor(colour)).abs().max() <= tolerance)


# --- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {"quality": 90}),
        ("GIF", {}),
        ("BMP", {}),
    ],
)
def test_supported_formats_decode_to_uint8_rgb(fmt: str, options: dict[str, object]) -> None:
    image = decode_image(encode(halves(), fmt, **options), max_pixels=10_000)
    assert image.dtype == torch.uint8
    assert image.shape == (3, 20, 40)
    assert close_to(image[:, 10, 5], RED)
    assert close_to(image[:, 10, 35], BLUE)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_png_modes_come_out_as_three_channels(mode: str) -> None:
    source = Image.new("RGB", (12, 8), (200, 200, 200)).convert(mode)
    image = decode_image(encode(source, "PNG"), max_pixels=10_000)
    assert image.shape == (3, 8, 12)
    assert image.dtype == torch.uint8
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_sixteen_bit_png_keeps_its_brightness() -> None:
    image = decode_image(encode(Image.new("I;16", (4, 4), 40_000), "PNG"), max_pixels=100)
    assert image.dtype == torch.uint8
    assert int(image[0, 0, 0]) == 40_000 >> 8


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_transparency_is_laid_on_white(fmt: str) -> None:
    source = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # transparent black
    source.paste((255, 0, 0, 255), (0, 0, 5, 10))  # opaque red on the left
    options: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    image = decode_image(encode(source, fmt, **options), max_pixels=100)
    assert image.shape == (3, 10, 10)
    assert close_to(image[:, 5, 2], RED, tolerance=0)
    assert close_to(image[:, 5, 8], (255, 255, 255), tolerance=0)


def test_only_the_first_frame_of_an_animation_is_decoded() -> None:
    frames = [Image.new("RGB", (16, 8), colour) for colour in (RED, BLUE, RED)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    image = decode_image(data, max_pixels=200)
    assert image.shape == (3, 8, 16)
    assert close_to(image[:, 4, 8], RED)


# --- EXIF orientation -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    source = halves(40, 20)
    exif = source.getexif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to display
    image = decode_image(encode(source, fmt, exif=exif.tobytes(), quality=95), max_pixels=10_000)
    assert image.shape == (3, 40, 20)
    # Turning clockwise brings the left (red) half to the top.
    assert close_to(image[:, 5, 10], RED)
    assert close_to(image[:, 35, 10], BLUE)


# --- limits and hostile input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        (20_000, 20_000),  # over twice PIL's own bomb limit: PIL refuses while opening
        (10_000, 10_000),  # over PIL's warning limit
        (8_000, 6_000),  # under PIL's limits, over ours
    ],
)
def test_a_decompression_bomb_is_refused_from_its_header(size: tuple[int, int]) -> None:
    data = png_claiming(*size)
    assert len(data) < 200
    with pytest.raises(ImageTooLarge, match="40,000,000 pixels") as caught:
        decode_image(data, max_pixels=40_000_000)
    assert caught.value.kind == "image_too_large"


def test_the_pixel_limit_counts_width_times_height() -> None:
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert decode_image(data, max_pixels=5_000).shape == (3, 50, 100)
    with pytest.raises(ImageTooLarge, match=r"100 x 50 pixels \(5,000\); the limit is 4,999"):
        decode_image(data, max_pixels=4_999)


@pytest.mark.parametrize("size", [(1, 40_000_000), (40_000_000, 1), (16_385, 16)])
def test_a_photo_longer_than_the_longest_side_is_refused_from_its_header(
    size: tuple[int, int],
) -> None:
    """Within the pixel limit, 1 x 40,000,000 pixels took 3.3 s and 1.6 GB to decode."""
    with pytest.raises(ImageTooLarge, match="the limit is 16,384 a side"):
        decode_image(png_claiming(*size), max_pixels=40_000_000)
    longest = encode(Image.new("RGB", (16_384, 2)), "PNG")
    assert decode_image(longest, max_pixels=40_000_000).shape == (3, 2, 16_384)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_truncated_images_are_undecodable(fmt: str) -> None:
    data = encode(Image.effect_noise((64, 64), 64).convert("RGB"), fmt)
    with pytest.raises(ImageUndecodable) as caught:
        decode_image(data[: len(data) * 2 // 3], max_pixels=10_000)
    assert caught.value.kind == "image_undecodable"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"<html><body>404</body></html>",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
        b"\xff\xd8\xff" + b"\x00" * 40,
    ],
)
def test_garbage_is_undecodable(data: bytes) -> None:
    with pytest.raises(ImageUndecodable):
        decode_image(data, max_pixels=10_000)


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM"])
def test_formats_outside_the_list_are_undecodable(fmt: str) -> None:
    with pytest.raises(ImageUndecodable, match="supported format"):
        decode_image(encode(halves(16, 16), fmt), max_pixels=10_000)


# --- the JPEG header walk against PIL's ------------------------------------------------------


def _jpegs() -> dict[str, bytes]:
    image = Image.effect_noise((40, 24), 64).convert("RGB")
    turned = Image.Exif()
    turned[0x0112] = 6
    mpo = io.BytesIO()
    image.save(mpo, "MPO", save_all=True, append_images=[halves()])
    return {
        "baseline": encode(image, "JPEG"),
        "progressive": encode(image, "JPEG", progressive=True),
        "optimised": encode(image, "JPEG", optimize=True),
        "grey": encode(image.convert("L"), "JPEG"),
        "CMYK": encode(image.convert("CMYK"), "JPEG"),
        "EXIF orientation": encode(image, "JPEG", exif=turned.tobytes()),
        "ICC profile": encode(image, "JPEG", icc_profile=b"x" * 3000),
        "comment": encode(image, "JPEG", comment=b"a comment"),
        "no subsampling": encode(image, "JPEG", subsampling=0),
        "multi-picture (MPO)": mpo.getvalue(),
    }


JPEGS = _jpegs()


@pytest.mark.parametrize("name", list(JPEGS))
def test_a_jpeg_header_is_read_as_pil_reads_it(name: str) -> None:
    data = JPEGS[name]
    walked = decode_mod._jpeg_header(data)
    if name.startswith("multi-picture"):
        assert walked is None  # PIL reads it (and decodes it)
    else:
        assert walked == decode_mod._pil_header(data, 10_000)


def _outcome(data: bytes, walk: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    with monkeypatch.context() as m:
        if not walk:
            m.setattr(decode_mod, "_jpeg_header", lambda data: None)
        try:
            image = decode_image(data, max_pixels=10_000)
        except (ImageTooLarge, ImageUndecodable) as exc:
            return (type(exc).__name__,)
    return ("decoded", tuple(image.shape), image.sum().item())


def test_damaged_jpegs_end_as_with_pils_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut short, bytes changed or put in within the header and the first of the scan: each
    is decoded to the same pixels or refused as before, whichever header reader reads it."""
    rng = random.Random(8)
    for data in JPEGS.values():
        for _ in range(40):
            damaged = bytearray(data)
            way = rng.randrange(3)
            at = rng.randrange(min(len(damaged), 800))
            if way == 0:
                del damaged[at:]
            elif way == 1:
                damaged[at] = rng.randrange(256)
            else:
                damaged[at:at] = rng.randbytes(rng.randint(1, 4))
            mutant = bytes(damaged)
            assert _outcome(mutant, True, monkeypatch) == _outcome(mutant, False, monkeypatch)


# --- inline base64 --------------------------------------------------------------------------


def test_base64_round_trip_ignoring_line_breaks() -> None:
    data = encode(halves(), "PNG")
    text = base64.encodebytes(data).decode()  # MIME style, a line break every 76 characters
    assert "\n" in text
    assert decode_base64(text, max_bytes=len(data)) == data


@pytest.mark.parametrize("text", ["not base64!", "QU=JDRA=", "QUJDRA", "w6k=\u00e9", "QUJD\x00"])
def test_invalid_base64_is_undecodable(text: str) -> None:
    with pytest.raises(ImageUndecodable, match="not valid base64"):
        decode_base64(text, max_bytes=1024)


def test_oversize_base64_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match="limit is 1,024 bytes"):
        decode_base64("A" * 4 * 1024, max_bytes=1024)
    exact = base64.b64encode(b"x" * 1025).decode()
    with pytest.raises(ImageTooLarge, match="1,025 bytes; the limit is 1,024"):
        decode_base64(exact, max_bytes=1024)
