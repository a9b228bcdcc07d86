"""The ways an image can fail, each tied to the dead-letter `ErrorKind` it is reported as.

Messages are read by the catalogue team that sent the product, so each one names the URL, host
or limit involved and says what to change.
"""

from __future__ import annotations

from typing import ClassVar

from schemas.dead_letter import ErrorKind

__all__ = [
    "ForbiddenUrl",
    "ImageError",
    "ImageTooLarge",
    "ImageUndecodable",
    "ImageUnreachable",
]


class ImageError(Exception):
    """Base of every image failure; `kind` is what the dead letter's `error_kind` carries."""

    kind: ClassVar[ErrorKind] = "unprocessable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ForbiddenUrl(ImageError):
    """The URL may not be fetched: wrong scheme, credentials, a host off the allow-list, or an
    address that is not on the public internet."""

    kind: ClassVar[ErrorKind] = "forbidden_url"


class ImageUnreachable(ImageError):
    """The URL was allowed but no image came back: DNS, connection, TLS, HTTP status, deadline
    or too many redirects."""

    kind: ClassVar[ErrorKind] = "image_unreachable"


class ImageUndecodable(ImageError):
    """The bytes are not an image in a supported format, or the image is damaged."""

    kind: ClassVar[ErrorKind] = "image_undecodable"


class ImageTooLarge(ImageError):
    """The image is over the byte or pixel limit."""

    kind: ClassVar[ErrorKind] = "image_too_large"
