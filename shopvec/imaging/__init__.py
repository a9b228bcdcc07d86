"""Product images: fetching URLs safely, decoding bytes within limits, loading a batch at once.

Everything here raises `ImageError` subclasses whose `kind` is the dead-letter `ErrorKind`.
"""

from shopvec.imaging.decode import SUPPORTED_FORMATS, decode_base64, decode_image
from shopvec.imaging.errors import (
    ForbiddenUrl,
    ImageError,
    ImageTooLarge,
    ImageUndecodable,
    ImageUnreachable,
)
from shopvec.imaging.fetch import Resolver, SafeFetcher, system_resolver
from shopvec.imaging.loader import ImageLoader
from shopvec.imaging.policy import address_refusal, display_url, host_allowed

__all__ = [
    "SUPPORTED_FORMATS",
    "ForbiddenUrl",
    "ImageError",
    "ImageLoader",
    "ImageTooLarge",
    "ImageUndecodable",
    "ImageUnreachable",
    "Resolver",
    "SafeFetcher",
    "address_refusal",
    "decode_base64",
    "decode_image",
    "display_url",
    "host_allowed",
    "system_resolver",
]
