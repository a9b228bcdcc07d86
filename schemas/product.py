"""Product events: an upsert carries the whole product; a delete names it."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter, model_validator

from schemas._base import Contract, UtcDatetime

__all__ = [
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
        description="letters, combining marks, decimal digits and . _ : @ + - (1 to 128)",
    ),
]


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
    version: int = Field(ge=0, description="monotonic per product: the highest version wins")
    updated_at: UtcDatetime
    title: str = Field(default="", max_length=512)
    description: str = Field(default="", max_length=8192)
    category_path: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=16, description='e.g. ["Apparel", "Topwear", "Tshirts"]'
    )
    brand: str | None = Field(default=None, max_length=128)
    price: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=4)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    in_stock: bool = True
    attributes: dict[str, Any] = Field(default_factory=dict)
    images: list[ProductImage] = Field(default_factory=list, max_length=16)
    locale: str = Field(default="en", max_length=35)

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
    version: int = Field(ge=0)
    updated_at: UtcDatetime


ProductEvent = Annotated[ProductUpsert | ProductDelete, Field(discriminator="kind")]

_adapter: TypeAdapter[ProductUpsert | ProductDelete] = TypeAdapter(ProductEvent)


def parse_product_event(data: bytes | str) -> ProductUpsert | ProductDelete:
    """Validates one product event body; raises pydantic.ValidationError with the reason."""
    return _adapter.validate_json(data)
