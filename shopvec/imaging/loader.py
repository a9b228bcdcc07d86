"""From a product's `ProductImage` (a URL or inline base64) to a decoded RGB tensor.

`ImageLoader` owns the thread pool that fetches a batch of images at once, and applies the same
byte and pixel limits to inline images as to fetched ones. A decoded photo is shrunk at once to
`max_side` pixels a side: a few kilobytes of WebP can hold 40 million pixels (120 MB decoded),
and a batch holds its photos until they are encoded. Inline images wait on nothing, so
they are decoded on the calling thread: handing each to a pool thread cost more CPU than
decoding a catalogue photo, on cores the encoder needs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import torch

from schemas.product import ProductImage
from shopvec.imaging.decode import decode_base64, decode_image
from shopvec.imaging.errors import ImageError
from shopvec.imaging.fetch import SafeFetcher
from shopvec.imaging.policy import display_url
from shopvec.imaging.resize import shrink
from shopvec.settings import ImageFetchSettings

__all__ = ["DECODES_AT_ONCE", "ImageLoader"]

DECODES_AT_ONCE = 2
"""Photos decoded at the same time, whatever the number of fetches: a photo at the pixel limit
takes about 130 MB while it is decoded, and eight at once grew a process by 1.3 to 1.7 GB."""


class ImageLoader:
    """Loads product images; `close()` (or `with`) stops its threads.

    Each fetch has its own deadline (`timeout_s`), so a batch of n images takes at most about
    ceil(n / max_workers) deadlines plus decoding. Fetches run max_workers at once, decoding
    DECODES_AT_ONCE.
    """

    def __init__(
        self,
        settings: ImageFetchSettings,
        fetcher: SafeFetcher | None = None,
        max_workers: int = 8,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher or SafeFetcher(settings)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="shopvec-image")
        self._decoding = threading.BoundedSemaphore(DECODES_AT_ONCE)

    def load(self, image: ProductImage) -> torch.Tensor:
        """uint8 RGB (3, H, W), at most max_side a side; raises an ImageError subclass that says
        which image failed."""
        if image.url is not None:
            data = self._fetcher.fetch(image.url)
            source = display_url(image.url)
        else:
            assert image.data_base64 is not None  # ProductImage has exactly one source
            source = "inline image"
            data = decode_base64(image.data_base64, self._settings.max_bytes)
        try:
            with self._decoding:
                decoded = decode_image(data, self._settings.max_pixels)
                return shrink(decoded, self._settings.max_side)
        except ImageError as exc:
            raise type(exc)(f"{source}: {exc.message}") from None

    def load_many(self, images: Sequence[ProductImage]) -> list[torch.Tensor | ImageError]:
        """One entry per image, in input order: the tensor, or the ImageError that stopped it.

        Any other exception is a bug, not bad input, and is raised.
        """
        fetched = {
            i: self._pool.submit(self._load_or_error, image)
            for i, image in enumerate(images)
            if image.url is not None
        }
        return [
            fetched[i].result() if i in fetched else self._load_or_error(image)
            for i, image in enumerate(images)
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageLoader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _load_or_error(self, image: ProductImage) -> torch.Tensor | ImageError:
        try:
            return self.load(image)
        except ImageError as exc:
            return exc
