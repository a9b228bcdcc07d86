"""Turning image bytes into the uint8 RGB (3, H, W) tensors encoders take, safely.

The header is read first (PIL opens lazily) so an image over the pixel limit is refused before
any pixel is decoded: a few kilobytes of PNG can otherwise claim gigabytes of memory. JPEG, PNG
and WebP are decoded by torchvision; GIF and BMP by PIL. Every other format is refused, which
also keeps PIL's rarer and riskier decoders out of reach of untrusted input.
"""

from __future__ import annotations

import base64
import binascii
import io
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


def _read_header(data: bytes, max_pixels: int) -> _Header:
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
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the {fmt} image is {width} x {height} pixels ({width * height:,}); "
            f"the limit is {max_pixels:,} pixels"
        )
    if width == 0 or height == 0:
        raise ImageUndecodable(f"the {fmt} image has no pixels ({width} x {height})")
    return _Header(fmt, width, height, has_alpha, needs_pil)


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
