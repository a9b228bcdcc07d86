"""Product events: an upsert carries the whole product; a delete names it."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter, field_validator, model_validator

from schemas._base import INT64_MAX, Contract, UtcDatetime, utf8_at_most

__all__ = [
    "ATTRIBUTES_MAX_BYTES",
    "BRAND_MAX_BYTES",
    "CATEGORY_MAX_BYTES",
    "MAX_INLINE_IMAGE_BYTES",
    "PRODUCT_ID_MAX_LENGTH",
    "PRODUCT_ID_PATTERN",
    "ProductDelete",
    "ProductEvent",
    "ProductId",
    "ProductImage",
    "ProductUpsert",
    "parse_product_event",
]

MAX_INLINE_IMAGE_BYTES = 8 * 1024 * 1024
"""Base64 text longer than this (about 6 MiB of image) is refused at validation."""

PRODUCT_ID_MAX_LENGTH = 128
"""At most 128 characters, and at most 128 bytes in UTF-8 (the Milvus primary key's length)."""
BRAND_MAX_BYTES = 256
CATEGORY_MAX_BYTES = 128
"""Each name of the category path."""
ATTRIBUTES_MAX_BYTES = 16 * 1024
"""The attributes as compact JSON; they are stored in a Milvus JSON field of at most 64 KiB,
beside the product's thumbnail and the rest of its document."""
PRODUCT_ID_PATTERN = r"^[\p{L}\p{M}\p{Nd}._:@+\-]+$"
r"""Letters of any script with their combining marks, decimal digits, and `. _ : @ + -`.

An id is a Kafka key, a Milvus primary key, a literal in Milvus filters and a word on an
operator's terminal, so it carries no path separator, whitespace, quote or control character.
Unicode property classes rather than `\w`, which is ASCII in ECMAScript and a little different in
every other engine: Rust, ECMAScript (u flag), Java, Go and .NET read this pattern alike.
Python's `re` cannot read it; Python producers validate with these models.
"""

ProductId = Annotated[
    str,
    # Surrounding whitespace is refused, not trimmed, so the id a producer keys its message by is
    # the id in the body, and so the JSON Schema and the model accept the same strings.
    StringConstraints(strip_whitespace=False),
    Field(
        min_length=1,
        max_length=PRODUCT_ID_MAX_LENGTH,
        pattern=PRODUCT_ID_PATTERN,
        description=(
            "letters, combining marks, decimal digits and . _ : @ + - (1 to 128 characters, "
            "at most 128 bytes in UTF-8)"
        ),
    ),
    utf8_at_most(PRODUCT_ID_MAX_LENGTH),
]


def _check_json_values(value: Any) -> None:
    """Refuses what a JSON field in Milvus cannot hold: NaN and infinities (JSON has no
    number for them) and integers beyond 64 bits."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValueError("an integer outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value}: JSON has no such number")
    elif isinstance(value, dict):
        for v in value.values():
            _check_json_values(v)
    elif isinstance(value, list):
        for v in value:
            _check_json_values(v)


class ProductImage(Contract):
    """One photo: a URL to fetch (http or https) or the bytes inline as base64."""

    url: str | None = Field(default=None, max_length=2048)
    data_base64: str | None = Field(default=None, max_length=MAX_INLINE_IMAGE_BYTES)
    role: Literal["main", "extra"] = "main"

    @model_validator(mode="after")
    def _one_source(self) -> ProductImage:
        if (self.url is None) == (self.data_base64 is None):
            raise ValueError("an image has exactly one of url or data_base64")
        return self


class ProductUpsert(Contract):
    """The full state of a product. A newer version replaces an older one; never the reverse."""

    schema_version: Literal[1] = 1
    kind: Literal["upsert"] = "upsert"
    id: ProductId
    version: int = Field(
        ge=0, le=INT64_MAX, description="monotonic per product: the highest version wins"
    )
    updated_at: UtcDatetime
    title: str = Field(default="", max_length=512)
    description: str = Field(default="", max_length=8192)
    category_path: list[Annotated[str, Field(max_length=128), utf8_at_most(CATEGORY_MAX_BYTES)]] = (
        Field(
            default_factory=list,
            max_length=16,
            description='e.g. ["Apparel", "Topwear", "Tshirts"]',
        )
    )
    brand: Annotated[str, utf8_at_most(BRAND_MAX_BYTES)] | None = Field(
        default=None, max_length=128
    )
    price: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=4)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    in_stock: bool = True
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "JSON values: strings, finite numbers, integers of 64 bits, booleans, null, lists "
            "and objects of them; at most 16 KiB as compact JSON"
        ),
    )
    images: list[ProductImage] = Field(default_factory=list, max_length=16)
    locale: str = Field(default="en", max_length=35)

    @field_validator("attributes")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_json_values(value)
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > ATTRIBUTES_MAX_BYTES:
            raise ValueError(f"{size} bytes as JSON, more than {ATTRIBUTES_MAX_BYTES}")
        return value

    @model_validator(mode="after")
    def _something_to_index(self) -> ProductUpsert:
        if not self.title and not self.description and not self.images:
            raise ValueError("a product needs a title, a description or an image to be searchable")
        return self

    @property
    def text(self) -> str:
        """The words a product is found by: its title, then its description."""
        return " ".join(part for part in (self.title, self.description) if part)


class ProductDelete(Contract):
    """Removes a product. A delete of version v also beats any upsert of version <= v."""

    schema_version: Literal[1] = 1
    kind: Literal["delete"] = "delete"
    id: ProductId
    version: int = Field(ge=0, le=INT64_MAX)
    updated_at: UtcDatetime


ProductEvent = Annotated[ProductUpsert | ProductDelete, Field(discriminator="kind")]

_adapter: TypeAdapter[ProductUpsert | ProductDelete] = TypeAdapter(ProductEvent)


def parse_product_event(data: bytes | str) -> ProductUpsert | ProductDelete:
    """Validates one product event body; raises pydantic.ValidationError with the reason."""
    return _adapter.validate_json(data)
