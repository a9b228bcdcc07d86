"""From validated product events to rows in the store: ordering, reuse, encoding, fusion.

Idempotent by construction: the highest version wins, an event at or below the stored version
changes nothing, and content hashes let an update that changes only price or stock (or a
replay) reuse the stored vectors instead of encoding again.

Each row also carries the product's words for full-text search (`words`: title, brand,
category path, attribute values, description, and the colour words read from its photos'
pixels) and its photos' own words (`photo_words`: the colour words alone).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from schemas.product import ProductDelete, ProductImage, ProductUpsert
from shopvec.encoders.base import Encoder
from shopvec.fusion import Fusion
from shopvec.imaging.colour import colour_words_many
from shopvec.imaging.thumbnail import thumbnail_data_uri
from shopvec.store.base import (
    TEXT_MAX_BYTES,
    TITLE_MAX_BYTES,
    VECTOR_FIELDS,
    ProductStore,
    StoredState,
    clip_utf8,
)
from shopvec.terms import index_terms

__all__ = [
    "ImageSource",
    "IndexOutcome",
    "Prepared",
    "ProductEventT",
    "ProductIndexer",
    "product_words",
]

log = logging.getLogger(__name__)

ProductEventT = ProductUpsert | ProductDelete


class ImageSource(Protocol):
    """Turns product images into decoded tensors; a failure is returned in its slot."""

    def load_many(self, images: Sequence[ProductImage]) -> Sequence[torch.Tensor | Exception]: ...


@dataclass
class IndexOutcome:
    written: int = 0
    deleted: int = 0
    stale: int = 0
    """Events older than (or equal to) what the store already holds: replays, late arrivals."""
    reused: int = 0
    """Products written without encoding: only non-vector fields changed."""
    encoded_texts: int = 0
    encoded_images: int = 0
    encode_seconds: float = 0.0
    failures: list[tuple[ProductEventT, Exception]] = field(default_factory=list)
    written_event_ms: list[int] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    """When the batch reached each stage (time.time()): assembled (handed over by the consumer
    loop), prepared, encode_start, encoded, write_start, written. Set by the indexer service."""


@dataclass
class Prepared:
    """A batch between stages: rows decided so far, and what encoding needs."""

    outcome: IndexOutcome
    purge: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    upserts: list[ProductUpsert] = field(default_factory=list)
    photos: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    reuse_text: set[str] = field(default_factory=set)
    reuse_image: set[str] = field(default_factory=set)
    old_vectors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    text_hashes: dict[str, str] = field(default_factory=dict)
    image_hashes: dict[str, str] = field(default_factory=dict)
    thumbnails: dict[str, str | None] = field(default_factory=dict)
    photo_confidence: dict[str, float | None] = field(default_factory=dict)
    """Of the stored photos that are reused."""
    colours: dict[str, str] = field(default_factory=dict)
    """Colour words of each product's photos: read from the pixels, or the stored ones."""
    states: dict[str, StoredState] = field(default_factory=dict)
    """What the store will hold for each id once this batch is written."""


def _content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def _image_hash(images: Sequence[ProductImage], encoder_key: str) -> str:
    if not images:
        return ""
    return _content_hash(encoder_key, *(img.url or img.data_base64 or "" for img in images))


def _text_hash(event: ProductUpsert, encoder_key: str) -> str:
    return _content_hash(encoder_key, event.text) if event.text else ""


def _attribute_words(value: Any) -> list[str]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, list | tuple):
        return [w for v in value for w in _attribute_words(v)]
    return []


def product_words(event: ProductUpsert, colours: str = "") -> str:
    """What full-text search matches a product by: title, brand, category path, attribute
    values, description (normalised for matching: shopvec.terms), then the colour words of
    its photos."""
    parts = [
        event.title,
        event.brand or "",
        *event.category_path,
        *(w for v in event.attributes.values() for w in _attribute_words(v)),
        event.description,
        colours,
    ]
    # The colours go last but must survive the cut: they are what photo-only words lack.
    head = index_terms(" ".join(p for p in parts[:-1] if p))
    room = TEXT_MAX_BYTES["words"] - len(colours.encode()) - 1
    return " ".join(p for p in (clip_utf8(head, max(0, room)), colours) if p)


def latest_per_product(events: Sequence[ProductEventT]) -> list[ProductEventT]:
    """One event per product: the highest version; at equal versions a delete wins."""
    best: dict[str, ProductEventT] = {}
    for event in events:
        held = best.get(event.id)
        if (
            held is None
            or event.version > held.version
            or (event.version == held.version and isinstance(event, ProductDelete))
        ):
            best[event.id] = event
    return list(best.values())


def _supersedes(event: ProductEventT, stored: StoredState | None) -> bool:
    if stored is None:
        return True
    if event.version != stored.version:
        return event.version > stored.version
    return isinstance(event, ProductDelete) and not stored.deleted


class ProductIndexer:
    def __init__(
        self,
        encoder: Encoder,
        store: ProductStore,
        images: ImageSource,
        fusion: Fusion,
    ) -> None:
        self._encoder = encoder
        self._store = store
        self._images = images
        self._fusion = fusion
        self._key = encoder.info.key
        dims = store.spec.dims()
        # A placeholder for a tombstone's vectors or a missing modality: a fixed unit vector,
        # never searched because has_image/has_text/deleted exclude it.
        self._placeholder: dict[str, np.ndarray] = {f: self._unit(dims[f]) for f in VECTOR_FIELDS}

    @staticmethod
    def _unit(dim: int) -> np.ndarray:
        v = np.zeros(dim, dtype=np.float32)
        v[0] = 1.0
        return v

    def apply(self, events: Sequence[ProductEventT], purge: Sequence[str] = ()) -> IndexOutcome:
        """All three stages in one call; the service runs them on separate threads."""
        return self.write(self.encode(self.prepare(events, purge=purge)))

    # -- stage 1: decide what to write, load what must be encoded ----------------------------

    def prepare(
        self,
        events: Sequence[ProductEventT],
        *,
        purge: Sequence[str] = (),
        pending: Mapping[str, StoredState | None] | None = None,
    ) -> Prepared:
        """`purge`: ids whose rows go before this batch is written (compacted-topic tombstones).
        `pending`: what batches still in flight will have written, which wins over the store
        (None for an id they purge); their vectors are not readable yet, so none are reused."""
        pending = pending or {}
        out = Prepared(outcome=IndexOutcome(), purge=list(dict.fromkeys(purge)))
        latest = latest_per_product(events)
        out.outcome.stale += len(events) - len(latest)
        stored = self._store.state([e.id for e in latest if e.id not in out.purge])
        for i in out.purge:
            stored.pop(i, None)
        for i, state in pending.items():
            if state is None:
                stored.pop(i, None)
            else:
                stored[i] = state
        todo = [e for e in latest if _supersedes(e, stored.get(e.id))]
        out.outcome.stale += len(latest) - len(todo)
        for event in todo:
            if isinstance(event, ProductDelete):
                out.rows.append(self._tombstone(event))
                out.outcome.deleted += 1
                out.states[event.id] = StoredState(event.version, True, "", "")
        upserts = [e for e in todo if isinstance(e, ProductUpsert)]
        if upserts:
            self._prepare_upserts(upserts, stored, set(pending), out)
        return out

    def _prepare_upserts(
        self,
        events: list[ProductUpsert],
        stored: dict[str, StoredState],
        in_flight: set[str],
        out: Prepared,
    ) -> None:
        out.text_hashes = {e.id: _text_hash(e, self._key) for e in events}
        out.image_hashes = {e.id: _image_hash(e.images, self._key) for e in events}

        def reusable(e: ProductUpsert, which: str) -> bool:
            s = stored.get(e.id)
            if s is None or s.deleted or e.id in in_flight or e.id in out.purge:
                return False
            if which == "text":
                return bool(out.text_hashes[e.id]) and s.text_hash == out.text_hashes[e.id]
            # Attention pools the photos (and their regions) with the title, so new words need
            # the photos again.
            if self._fusion.method == "attention" and s.text_hash != out.text_hashes[e.id]:
                return False
            return bool(out.image_hashes[e.id]) and s.image_hash == out.image_hashes[e.id]

        out.reuse_text = {e.id for e in events if reusable(e, "text")}
        out.reuse_image = {e.id for e in events if reusable(e, "image")}
        for pid in out.reuse_image:
            out.thumbnails[pid] = stored[pid].thumbnail
            out.photo_confidence[pid] = stored[pid].photo_confidence
            out.colours[pid] = stored[pid].colour_words or ""
        out.old_vectors = self._store.vectors(sorted(out.reuse_text | out.reuse_image))

        # Photos first: a product whose photo fails is dead-lettered, not half-indexed.
        need_photos = [e for e in events if e.images and e.id not in out.reuse_image]
        flat = [img for e in need_photos for img in e.images]
        loaded = self._images.load_many(flat) if flat else []
        cursor = 0
        failed: set[str] = set()
        for e in need_photos:
            got = loaded[cursor : cursor + len(e.images)]
            cursor += len(e.images)
            error = next((g for g in got if isinstance(g, Exception)), None)
            if error is not None:
                out.outcome.failures.append((e, error))
                failed.add(e.id)
            else:
                out.photos[e.id] = [g for g in got if isinstance(g, torch.Tensor)]
        named = [e.id for e in need_photos if e.id in out.photos]
        for pid, words in zip(
            named, colour_words_many([out.photos[p] for p in named]), strict=True
        ):
            out.colours[pid] = words
        out.upserts = [e for e in events if e.id not in failed]
        for e in out.upserts:
            out.states[e.id] = StoredState(
                e.version, False, out.text_hashes[e.id], out.image_hashes[e.id], None
            )

    # -- stage 2: encode and fuse ---------------------------------------------------------------

    def encode(self, prepared: Prepared) -> Prepared:
        """Encodes the batch at once; should that fail, product by product, so that one
        product the encoder cannot take is dead-lettered instead of stopping the indexer."""
        out = prepared
        if not out.upserts:
            return out
        started = time.perf_counter()
        try:
            out.rows.extend(self._encode_rows(out.upserts, out))
        except Exception:
            log.exception("encoding a batch of %d failed; retrying one by one", len(out.upserts))
            for e in out.upserts:
                try:
                    out.rows.extend(self._encode_rows([e], out))
                except Exception as exc:
                    out.outcome.failures.append((e, exc))
                    out.states.pop(e.id, None)
        out.outcome.encode_seconds += time.perf_counter() - started
        return out

    def _encode_rows(self, events: list[ProductUpsert], p: Prepared) -> list[dict[str, Any]]:
        text_events = [e for e in events if e.text and e.id not in p.reuse_text]
        text_vecs = self._encoder.encode_texts([e.text for e in text_events])
        text_by_id = {e.id: text_vecs[i] for i, e in enumerate(text_events)}
        flat_photos = [t for e in events if e.id in p.photos for t in p.photos[e.id]]
        image_vecs = self._encoder.encode_images(flat_photos)
        confidences = image_vecs.confidence
        p.outcome.encoded_texts += len(text_events)
        p.outcome.encoded_images += len(flat_photos)

        rows = []
        cursor = 0
        for e in events:
            old = p.old_vectors.get(e.id, {})
            text = text_by_id.get(e.id)
            if text is None and e.id in p.reuse_text:
                text = old["text_vec"]
            joint_photos = visual = confidence = regions = region_conf = None
            if e.id in p.photos and not any(img.url for img in e.images):
                p.thumbnails[e.id] = thumbnail_data_uri(p.photos[e.id][0])
            if e.id in p.photos:
                n = len(p.photos[e.id])
                joint_photos = image_vecs.joint[cursor : cursor + n]
                if confidences is not None:
                    confidence = confidences[cursor : cursor + n]
                visual = _mean_unit(image_vecs.visual[cursor : cursor + n])
                if image_vecs.regions is not None:
                    regions = image_vecs.regions[cursor : cursor + n]
                if image_vecs.region_confidence is not None:
                    region_conf = image_vecs.region_confidence[cursor : cursor + n]
                cursor += n
            elif e.id in p.reuse_image:
                joint_photos = old["image_vec"][None, :]
                stored = p.photo_confidence.get(e.id)
                confidence = None if stored is None else np.array([stored], np.float32)
                visual = old["visual_vec"]
            if e.id in p.reuse_text and (e.id in p.reuse_image or not e.images):
                p.outcome.reused += 1
            row = self._row(
                e,
                text,
                joint_photos,
                confidence,
                visual,
                p.text_hashes[e.id],
                p.image_hashes[e.id],
                p.colours.get(e.id, "") if joint_photos is not None else "",
                regions=regions,
                region_confidence=region_conf,
            )
            if e.id in p.reuse_text and e.id in p.reuse_image and "fused_vec" in old:
                # Nothing the vectors come from changed; the stored fused vector may hold what
                # the photos' regions gave, which are not kept.
                row["fused_vec"] = old["fused_vec"]
            if p.thumbnails.get(e.id):
                row["doc"]["thumbnail"] = p.thumbnails[e.id]
            rows.append(row)
            p.outcome.written_event_ms.append(int(e.updated_at.timestamp() * 1000))
        return rows

    # -- stage 3: write -------------------------------------------------------------------------

    def flush(self) -> None:
        self._store.flush()

    def write(self, prepared: Prepared) -> IndexOutcome:
        if prepared.purge:
            self._store.delete(prepared.purge)
        self._store.upsert(prepared.rows)
        prepared.outcome.written = len(prepared.rows)
        prepared.outcome.deleted += len(prepared.purge)
        return prepared.outcome

    def _tombstone(self, event: ProductDelete) -> dict[str, Any]:
        return {
            "id": event.id,
            "version": event.version,
            "deleted": True,
            "event_ms": int(event.updated_at.timestamp() * 1000),
            "title": "",
            "brand": "",
            "price": -1.0,
            "in_stock": False,
            "category": [],
            "has_image": False,
            "has_text": False,
            "text_hash": "",
            "image_hash": "",
            "doc": {},
            "words": "",
            "photo_words": "",
            **self._placeholder,
        }

    def _row(
        self,
        e: ProductUpsert,
        text: np.ndarray | None,
        joint_photos: np.ndarray | None,
        confidence: np.ndarray | None,
        visual: np.ndarray | None,
        text_hash: str,
        image_hash: str,
        colours: str = "",
        *,
        regions: np.ndarray | None = None,
        region_confidence: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """confidence: the encoder's, per photo (None: it gives none). colours: the colour
        words of the photos. regions: the photos' region vectors, for attention fusion."""
        has_image = joint_photos is not None
        has_text = text is not None
        fused, pooled = self._fusion.fuse_with_confidence(
            text, joint_photos, confidence, regions=regions, region_confidence=region_confidence
        )
        image_vec = _mean_unit(joint_photos) if joint_photos is not None else None
        main = next((img.url for img in e.images if img.url), None)
        return {
            "id": e.id,
            "version": e.version,
            "deleted": False,
            "event_ms": int(e.updated_at.timestamp() * 1000),
            "title": clip_utf8(e.title, TITLE_MAX_BYTES),
            "brand": e.brand or "",
            "price": float(e.price) if e.price is not None else -1.0,
            "in_stock": e.in_stock,
            "category": list(e.category_path),
            "has_image": has_image,
            "has_text": has_text,
            "text_hash": text_hash if has_text else "",
            "image_hash": image_hash if has_image else "",
            "doc": {
                "category_path": list(e.category_path),
                "currency": e.currency,
                "attributes": e.attributes,
                "image_url": main,
                "locale": e.locale,
                **(
                    {"photo_confidence": round(pooled, 4)}
                    if pooled is not None and confidence is not None
                    else {}
                ),
                **({"colour_words": colours} if colours else {}),
            },
            "words": product_words(e, colours),
            "photo_words": clip_utf8(colours, TEXT_MAX_BYTES["photo_words"]),
            "visual_vec": visual if visual is not None else self._placeholder["visual_vec"],
            "image_vec": image_vec if image_vec is not None else self._placeholder["image_vec"],
            "text_vec": text if text is not None else self._placeholder["text_vec"],
            "fused_vec": fused,
        }


def _mean_unit(rows: np.ndarray) -> np.ndarray:
    mean = np.asarray(rows, dtype=np.float32).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
