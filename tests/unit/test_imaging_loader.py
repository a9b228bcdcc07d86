"""ImageLoader: URL and inline images, batch order, failures in their slots, limits."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
import torch
from PIL import Image

from schemas.product import ProductImage
from shopvec.imaging import (
    ImageLoader,
    ImageTooLarge,
    ImageUndecodable,
    ImageUnreachable,
    SafeFetcher,
)
from shopvec.settings import ImageFetchSettings

SETTINGS = ImageFetchSettings(max_bytes=64 * 1024, max_pixels=10_000)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


class StubFetcher(SafeFetcher):
    """Serves bytes from a dict; an unknown URL is unreachable. Optionally waits until `meet`
    fetches are in flight at once."""

    def __init__(self, bodies: dict[str, bytes], meet: int = 1) -> None:
        super().__init__(SETTINGS)
        self.bodies = bodies
        self.barrier = threading.Barrier(meet, timeout=5)

    def fetch(self, url: str) -> bytes:
        self.barrier.wait()
        if url not in self.bodies:
            raise ImageUnreachable(f"could not fetch {url}: the server answered 404 Not Found")
        return self.bodies[url]


def inline(data: bytes) -> ProductImage:
    return ProductImage(data_base64=base64.b64encode(data).decode())


def test_load_many_keeps_input_order_and_puts_failures_in_their_slots() -> None:
    bodies = {"https://cdn.example.com/a.png": png(8, 4), "https://cdn.example.com/b.txt": b"hi"}
    images = [
        ProductImage(url="https://cdn.example.com/a.png"),
        inline(png(3, 5)),
        ProductImage(url="https://cdn.example.com/missing.png"),
        ProductImage(url="https://cdn.example.com/b.txt"),
        ProductImage(data_base64="%%%"),
    ]
    with ImageLoader(SETTINGS, fetcher=StubFetcher(bodies)) as loader:
        results = loader.load_many(images)
        assert loader.load_many([]) == []
    assert [type(r) for r in results] == [
        torch.Tensor,
        torch.Tensor,
        ImageUnreachable,
        ImageUndecodable,
        ImageUndecodable,
    ]
    assert isinstance(results[0], torch.Tensor) and results[0].shape == (3, 4, 8)
    assert isinstance(results[1], torch.Tensor) and results[1].shape == (3, 5, 3)
    assert "https://cdn.example.com/b.txt: the data" in str(results[3])
    assert str(results[4]).startswith("the inline image is not valid base64")


def test_urls_are_fetched_concurrently() -> None:
    urls = [f"https://cdn.example.com/{i}.png" for i in range(4)]
    # The barrier only opens when all four fetches are waiting at once.
    fetcher = StubFetcher(dict.fromkeys(urls, png(2, 2)), meet=4)
    with ImageLoader(SETTINGS, fetcher=fetcher, max_workers=4) as loader:
        results = loader.load_many([ProductImage(url=u) for u in urls])
    assert all(isinstance(r, torch.Tensor) for r in results)


def test_inline_images_are_decoded_on_the_calling_thread_and_fetches_on_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shopvec.imaging.loader as loader_module

    decoded_on: list[str] = []
    real = loader_module.decode_image

    def recording(data: bytes, max_pixels: int) -> torch.Tensor:
        decoded_on.append(threading.current_thread().name)
        return real(data, max_pixels)

    monkeypatch.setattr(loader_module, "decode_image", recording)
    url = "https://cdn.example.com/a.png"
    with ImageLoader(SETTINGS, fetcher=StubFetcher({url: png(2, 2)})) as loader:
        loader.load_many([inline(png(3, 3)), inline(png(4, 4))])
        assert decoded_on == [threading.current_thread().name] * 2
        decoded_on.clear()
        loader.load_many([ProductImage(url=url)])
    assert decoded_on[0].startswith("shopvec-image")


def test_decoded_photos_are_shrunk_to_the_largest_side() -> None:
    settings = SETTINGS.model_copy(update={"max_side": 64})
    with ImageLoader(settings, fetcher=StubFetcher({})) as loader:
        assert loader.load(inline(png(100, 50))).shape == (3, 32, 64)
        assert loader.load(inline(png(40, 30))).shape == (3, 30, 40)


def test_fetches_run_together_but_at_most_two_photos_are_decoded_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shopvec.imaging.loader as loader_module

    lock = threading.Lock()
    decoding, most = [0], [0]
    real = loader_module.decode_image

    def counting(data: bytes, max_pixels: int) -> torch.Tensor:
        with lock:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        try:
            time.sleep(0.05)
            return real(data, max_pixels)
        finally:
            with lock:
                decoding[0] -= 1

    monkeypatch.setattr(loader_module, "decode_image", counting)
    urls = [f"https://cdn.example.com/{i}.png" for i in range(6)]
    # All six fetches must be in flight at once for any to return.
    fetcher = StubFetcher(dict.fromkeys(urls, png(2, 2)), meet=6)
    with ImageLoader(SETTINGS, fetcher=fetcher, max_workers=6) as loader:
        results = loader.load_many([ProductImage(url=u) for u in urls])
    assert all(isinstance(r, torch.Tensor) for r in results)
    assert most[0] == loader_module.DECODES_AT_ONCE == 2


def test_inline_images_meet_the_same_limits() -> None:
    loader = ImageLoader(SETTINGS, fetcher=StubFetcher({}))
    try:
        with pytest.raises(ImageTooLarge, match="inline image: the PNG image is 200 x 200"):
            loader.load(inline(png(200, 200)))
        with pytest.raises(ImageTooLarge, match="the limit is 65,536 bytes"):
            loader.load(inline(b"\0" * (SETTINGS.max_bytes + 1)))
        assert loader.load(inline(png(100, 100))).shape == (3, 100, 100)
    finally:
        loader.close()
