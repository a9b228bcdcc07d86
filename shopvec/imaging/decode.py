"""Turning image bytes into the uint8 RGB (3, H, W) tensors encoders take, safely.

The header is read first (PIL opens lazily) so an image over the pixel limit is refused before
any pixel is decoded: a few kilobytes of PNG can otherwise claim gigabytes of memory. JPEG, PNG
and WebP are decoded by torchvision; GIF and BMP by PIL. Every other format is refused, which
also keeps PIL's rarer and riskier decoders out of reach of untrusted input.

A JPEG's header is read by walking its segments to the start of the scan (`_jpeg_header`), as
PIL's JPEG plugin does, for the frame's size: PIL's plugin also parses every segment's content
(EXIF, quantisation tables) on the way, which cost half as much as the decode itself for a
catalogue's small photos. A JPEG whose segments do not walk cleanly, or that carries a
multi-picture index (PIL's MPO, which PIL decodes), is read by PIL as before.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as _tv_decode

from shopvec.imaging.errors import ImageTooLarge, ImageUndecodable

__all__ = ["SUPPORTED_FORMATS", "decode_base64", "decode_image"]

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
"""PIL format names accepted; anything else is ImageUndecodable."""

_TORCHVISION_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
_EXIF_ORIENTATION = 0x0112
_WHITE = 255


@dataclass(frozen=True)
class _Header:
    format: str
    width: int
    height: int
    has_alpha: bool
    needs_pil: bool


def decode_image(data: bytes, max_pixels: int) -> torch.Tensor:
    """uint8 RGB (3, H, W), upright per the EXIF orientation; transparency is laid on white.

    Raises ImageTooLarge over `max_pixels` (checked from the header, before decoding) and
    ImageUndecodable for anything that is not a whole image in a supported format.
    """
    if not data:
        raise ImageUndecodable("the image is empty (0 bytes)")
    header = _read_header(data, max_pixels)
    if not header.needs_pil:
        try:
            return _decode_torchvision(data, header)
        except RuntimeError:
            # PIL gets a second try and, if it fails too, the clearer message.
            pass
    return _decode_pil(data, header)


def decode_base64(text: str, max_bytes: int) -> bytes:
    """The bytes of an inline image; line breaks and spaces in the text are ignored.

    Raises ImageTooLarge over `max_bytes` (checked before decoding) and ImageUndecodable for
    text that is not standard base64.
    """
    compact = "".join(text.split())
    # Four characters carry three bytes, less up to two for padding.
    if len(compact) // 4 * 3 - 2 > max_bytes:
        raise ImageTooLarge(
            f"the inline image is about {len(compact) // 4 * 3:,} bytes; "
            f"the limit is {max_bytes:,} bytes"
        )
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageUndecodable(
            f"the inline image is not valid base64 (standard alphabet, padded with '='): {exc}"
        ) from None
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"the inline image is {len(data):,} bytes; the limit is {max_bytes:,} bytes"
        )
    return data


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
"""The start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic):
the segment that gives the image's size."""

_FILL = re.compile(rb"\xff+")

_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
"""Markers without a length or a body (TEM, RST0 to RST7)."""


def _jpeg_header(data: bytes) -> _Header | None:
    """A JPEG's size from its frame segment, walking every segment from the start of the image
    to the start of the scan as PIL's JPEG plugin does; none where the walk does not end
    there with one frame segment read, or where the image carries a multi-picture index
    (APP2 "MPF"): PIL reads those."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    size: tuple[int, int] | None = None
    at, end = 2, len(data)
    while at < end:
        fill = _FILL.match(data, at)  # a marker, after any fill bytes
        if fill is None or fill.end() >= end:
            return None
        at = fill.end()
        marker = data[at]
        at += 1
        if marker in _STANDALONE:
            continue
        if marker in (0x00, 0xD8, 0xD9) or at + 2 > end:
            return None
        length = int.from_bytes(data[at : at + 2], "big")
        if length < 2 or at + length > end:
            return None
        body = data[at + 2 : at + length]
        if marker == 0xDA:  # start of scan: the header ends here
            if size is None:
                return None
            return _Header("JPEG", size[1], size[0], has_alpha=False, needs_pil=False)
        if marker in _SOF:
            if size is not None or len(body) < 6:
                return None
            size = (int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"))
        elif marker == 0xE2 and body[:4] == b"MPF\x00":
            return None
        at += length
    return None


def _read_header(data: bytes, max_pixels: int) -> _Header:
    return _checked(_jpeg_header(data) or _pil_header(data, max_pixels), max_pixels)


def _pil_header(data: bytes, max_pixels: int) -> _Header:
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as img:
            fmt = img.format or "?"
            width, height = img.size
            has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                "transparency" in img.info
            )
            # GIF always goes to PIL: torchvision would decode every frame of an animation.
            # torchvision applies EXIF orientation to JPEG and PNG only.
            needs_pil = fmt not in _TORCHVISION_FORMATS or getattr(img, "is_animated", False)
            if fmt == "WEBP" and not needs_pil:
                needs_pil = img.getexif().get(_EXIF_ORIENTATION, 1) != 1
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own guard fired first (its limit is well above ours by default).
        raise ImageTooLarge(
            f"the image is too large to decode safely ({exc}); the limit is {max_pixels:,} pixels"
        ) from None
    except Image.UnidentifiedImageError:
        # A URL that answers with an HTML error or login page is the common case.
        hint = ", it looks like a web page" if data.lstrip()[:1] == b"<" else ""
        raise ImageUndecodable(
            f"the data ({len(data):,} bytes, starting {data[:8]!r}{hint}) is not an image in "
            f"a supported format ({', '.join(SUPPORTED_FORMATS)})"
        ) from None
    except Exception as exc:
        # Hostile headers make PIL raise all sorts (SyntaxError, struct.error, ValueError...);
        # each of them means the same to the sender.
        raise ImageUndecodable(f"the image header is damaged: {exc}") from None
    return _Header(fmt, width, height, has_alpha, needs_pil)


MAX_EDGE = 16_384
"""The most pixels along either side (WebP's own limit). Within the pixel limit a photo of
1 x 40,000,000 pixels, 151 KB as PNG, took over 3 s and 1.6 GB to decode (libpng refuses it,
and PIL decodes it row by row) and 1 s more to shrink."""


def _checked(header: _Header, max_pixels: int) -> _Header:
    fmt, width, height = header.format, header.width, header.height
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the {fmt} image is {width} x {height} pixels ({width * height:,}); "
            f"the limit is {max_pixels:,} pixels"
        )
    if max(width, height) > MAX_EDGE:
        raise ImageTooLarge(
            f"the {fmt} image is {width} x {height} pixels; the limit is {MAX_EDGE:,} a side"
        )
    if width == 0 or height == 0:
        raise ImageUndecodable(f"the {fmt} image has no pixels ({width} x {height})")
    return header


def _decode_torchvision(data: bytes, header: _Header) -> torch.Tensor:
    # bytearray: torch.frombuffer warns on read-only buffers such as bytes.
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    mode = ImageReadMode.RGB_ALPHA if header.has_alpha else ImageReadMode.RGB
    image = _tv_decode(encoded, mode=mode, apply_exif_orientation=True)
    if image.dtype == torch.uint16:
        # 16-bit PNG: keep the high byte.
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.shape[0] == 4:
        image = _on_white(image)
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise RuntimeError(f"unexpected decoder output {tuple(image.shape)} {image.dtype}")
    return image.contiguous()


def _on_white(rgba: torch.Tensor) -> torch.Tensor:
    """Transparent product cut-outs are shown on white; dropping alpha would show whatever
    colour the transparent pixels happen to hold, often black."""
    rgb = rgba[:3].to(torch.int32)
    alpha = rgba[3:].to(torch.int32)
    blended = (rgb * alpha + _WHITE * (255 - alpha) + 127) // 255
    return blended.to(torch.uint8)


def _decode_pil(data: bytes, header: _Header) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as img:
            img.load()  # only the first frame of an animation
            upright = ImageOps.exif_transpose(img)
            if header.has_alpha:
                rgba = upright.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (_WHITE, _WHITE, _WHITE, 255))
                canvas.alpha_composite(rgba)
                rgb = canvas.convert("RGB")
            else:
                rgb = upright.convert("RGB")
            pixels = np.array(rgb, dtype=np.uint8)
    except Exception as exc:
        raise ImageUndecodable(
            f"the {header.format} image ({header.width} x {header.height}) is damaged or "
            f"truncated: {exc}"
        ) from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
