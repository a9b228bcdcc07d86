"""Encoder throughput: photos and texts a second, per backend and batch size, on real products.

The inputs are the photos and titles of a Myntra-style folder (``styles.csv`` and
``images/<id>.jpg``), decoded once beforehand, so that only encoding is timed. Each batch size
gets one untimed warm-up batch, then encodes every input in batches of that size, ``repeats``
times. The best rate is reported (all of them are kept), as ``timeit`` does: other work on the
machine only ever slows a run down, so the fastest run is the closest to what the encoder can do.

Backends:

- ``offline``: the default encoder (EfficientNet-Lite0 + multilingual USE + ConSE);
- ``hashing``: the weightless test encoder, a floor for the plumbing;
- ``clip-b32-random``: a CLIP ViT-B/32 built on the spot with random weights, saved and loaded
  through the production loader. Its speed is that of the architecture, its vectors are noise,
  and its byte-level tokenizer makes about four times more tokens than CLIP's own, so its
  texts/s is a lower bound;
- ``clip:PATH``: a real CLIP-family checkpoint from a folder.
"""

from __future__ import annotations

import csv
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from shopvec.encoders.base import Encoder

__all__ = [
    "BACKENDS",
    "Throughput",
    "as_json",
    "bench_encoders",
    "load_samples",
    "machine",
    "render_throughput",
]

BACKENDS = ("offline", "hashing", "clip-b32-random")

_LABELS = {
    "offline": "offline (EfficientNet-Lite0 + USE-m3 + ConSE)",
    "hashing": "hashing (no weights, test stand-in)",
    "clip-b32-random": "CLIP ViT-B/32 shape, random weights (speed only)",
}


@dataclass(frozen=True)
class Throughput:
    backend: str
    label: str
    batch_size: int
    images_per_s: float
    texts_per_s: float
    images: int
    texts: int
    image_runs: tuple[float, ...] = ()
    text_runs: tuple[float, ...] = ()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def load_samples(folder: str | Path, n: int) -> tuple[list[torch.Tensor], list[str]]:
    """The first ``n`` products of ``styles.csv`` that have a photo: decoded photos and titles."""
    from shopvec.imaging.decode import decode_image

    folder = Path(folder)
    photos: list[torch.Tensor] = []
    titles: list[str] = []
    with (folder / "styles.csv").open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            path = folder / "images" / f"{row['id']}.jpg"
            if not path.is_file():
                continue
            photos.append(decode_image(path.read_bytes(), max_pixels=40_000_000))
            titles.append(row["productDisplayName"] or "")
            if len(photos) == n:
                break
    if not photos:
        raise FileNotFoundError(f"no styles.csv rows with a photo under {folder}")
    return photos, titles


def _clip_b32_random(folder: Path) -> None:
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    # Byte-level BPE without merges: any text encodes, one token a byte.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for piece in alphabet + [char + "</w>" for char in alphabet]:
        vocab.setdefault(piece, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    torch.manual_seed(0)
    # CLIPConfig's defaults are ViT-B/32: 224 px, patch 32, 12 + 12 layers, 512-d projection.
    config = CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1})
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)


@contextmanager
def _backend(name: str, batch_size: int) -> Iterator[tuple[Encoder, str]]:
    if name == "offline":
        from shopvec.encoders.offline import OfflineEncoder

        offline = OfflineEncoder(batch_size=batch_size)
        offline.warm_up()
        yield offline, _LABELS[name]
    elif name == "hashing":
        from shopvec.encoders.hashing import HashingEncoder

        yield HashingEncoder(joint_dim=512, visual_dim=512), _LABELS[name]
    elif name == "clip-b32-random":
        from shopvec.encoders.clip import ClipFamilyEncoder

        with tempfile.TemporaryDirectory(prefix="shopvec-clip-b32-") as folder:
            _clip_b32_random(Path(folder))
            yield (
                ClipFamilyEncoder.from_pretrained(folder, device="cpu", batch_size=batch_size),
                _LABELS[name],
            )
    elif name.startswith("clip:"):
        from shopvec.encoders.clip import ClipFamilyEncoder

        path = name.removeprefix("clip:")
        clip = ClipFamilyEncoder.from_pretrained(path, batch_size=batch_size)
        yield clip, f"{clip.info.model_id} ({clip.device})"
    else:
        raise ValueError(f"unknown backend {name!r}: one of {list(BACKENDS)} or clip:PATH")


def _rates(
    encode: Callable[[Sequence[Any]], object], items: Sequence[Any], batch: int, repeats: int
) -> tuple[float, ...]:
    encode(items[:batch])  # warm-up: lazy loading, allocator, kernel choice
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(items), batch):
            encode(items[start : start + batch])
        rates.append(len(items) / (time.perf_counter() - started))
    return tuple(rates)


def bench_encoders(
    backends: Sequence[str],
    batch_sizes: Sequence[int],
    photos: Sequence[torch.Tensor],
    titles: Sequence[str],
    *,
    repeats: int = 3,
    on_result: Callable[[Throughput], None] | None = None,
) -> list[Throughput]:
    """Each backend is built once, for the largest batch size; smaller batches are fed to it."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    results = []
    for name in backends:
        with _backend(name, max(batch_sizes)) as (encoder, label):
            for size in batch_sizes:
                image_runs = _rates(encoder.encode_images, photos, size, repeats)
                text_runs = _rates(encoder.encode_texts, titles, size, repeats)
                result = Throughput(
                    backend=name,
                    label=label,
                    batch_size=size,
                    images_per_s=max(image_runs),
                    texts_per_s=max(text_runs),
                    images=len(photos),
                    texts=len(titles),
                    image_runs=image_runs,
                    text_runs=text_runs,
                )
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results


def render_throughput(results: Sequence[Throughput]) -> str:
    header = ["backend", "batch", "images/s", "texts/s"]
    rows = [
        [r.backend, str(r.batch_size), f"{r.images_per_s:.1f}", f"{r.texts_per_s:.1f}"]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            [
                header[0].ljust(widths[0]),
                *(h.rjust(w) for h, w in zip(header[1:], widths[1:], strict=True)),
            ]
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                [
                    row[0].ljust(widths[0]),
                    *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
                ]
            )
        )
    labels = dict.fromkeys(f"{r.backend}: {r.label}" for r in results)
    return "\n".join([*lines, "", *labels]) + "\n"


def as_json(results: Sequence[Throughput]) -> dict[str, Any]:
    return {"machine": machine(), "results": [asdict(r) for r in results]}
