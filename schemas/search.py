"""Search request and reply, sent over Kafka with a correlation id and a reply topic."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from schemas._base import Contract
from schemas.product import MAX_INLINE_IMAGE_BYTES, ProductId

__all__ = [
    "MAX_FILTER_ATTRIBUTES",
    "MAX_TOP_K",
    "Ranker",
    "Retrieval",
    "Scenario",
    "SearchError",
    "SearchFilters",
    "SearchReply",
    "SearchRequest",
    "SearchResult",
]

MAX_TOP_K = 200

MAX_FILTER_ATTRIBUTES = 16
"""Attribute equalities in one search's filters. Each is a clause of the expression Milvus parses
and evaluates per candidate row: 20,000 of them (a 300 KB request) kept a query worker busy for
10 s on a collection of 20 products."""

_FilterName = Annotated[str, Field(min_length=1, max_length=128)]
_FilterValue = (
    Annotated[str, Field(max_length=1024)]
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
)

Scenario = Literal[
    "auto", "image2image", "text2image", "text2product", "cross", "recommend", "more_like_this"
]
"""auto: image2image for a photo alone, text2product for words alone, cross for both,
more_like_this for a product id, and recommend for a user id alone (no query)."""

Ranker = Literal["fused", "rrf", "weighted"]
"""fused: one search on the fused vector. rrf and weighted: the fused vector and each modality
searched apart, then combined by reciprocal rank fusion or by the collection's fusion weights."""

Retrieval = Literal["dense", "hybrid"]
"""dense: vectors only. hybrid: the vectors and the words matched by full-text search together,
merged by Milvus's ranker (searches with words and ranker fused only)."""


class SearchFilters(Contract):
    """Every field narrows the results; strings match exactly (a longer one than a product's
    field may hold could match nothing and is refused)."""

    category: str | None = Field(
        default=None, max_length=128, description="matches any level of the path"
    )
    brand: str | None = Field(default=None, max_length=128)
    price_min: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    price_max: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    in_stock: bool | None = None
    attributes: dict[_FilterName, _FilterValue] = Field(
        default_factory=dict,
        max_length=MAX_FILTER_ATTRIBUTES,
        description="attribute name to the value it must equal",
    )


class SearchRequest(Contract):
    schema_version: Literal[1] = 1
    request_id: str = Field(min_length=1, max_length=128)
    reply_topic: str | None = Field(default=None, min_length=1, max_length=249)
    text: str | None = Field(default=None, max_length=1024)
    image_base64: str | None = Field(default=None, max_length=MAX_INLINE_IMAGE_BYTES)
    image_url: str | None = Field(default=None, max_length=2048)
    user_id: str | None = Field(default=None, max_length=256)
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    offset: int = Field(default=0, ge=0, le=1000)
    filters: SearchFilters | None = None
    scenario: Scenario = "auto"
    ranker: Ranker = "fused"
    retrieval: Retrieval | None = Field(
        default=None, description="dense or hybrid; unset: the server's choice for the scenario"
    )
    like_product_id: ProductId | None = Field(default=None, description="more like this product")
    deadline_ms: int | None = Field(
        default=None,
        ge=1,
        le=60_000,
        description="answer within this long after sending, cut short if need be",
    )
    explain: bool = Field(default=False, description="full explanations instead of compact ones")

    @model_validator(mode="after")
    def _has_query(self) -> SearchRequest:
        has_query = bool(self.text and self.text.strip()) or self.has_image
        if self.like_product_id:
            if has_query:
                raise ValueError("more like this takes a product id and no text or image")
            if self.scenario not in ("auto", "more_like_this"):
                raise ValueError(f"a like_product_id asks for more_like_this, not {self.scenario}")
            return self
        if self.scenario == "more_like_this":
            raise ValueError("more_like_this takes a like_product_id")
        if not has_query and not self.user_id:
            raise ValueError(
                "a search needs text, an image, or both (or a like_product_id, or a user_id alone)"
            )
        if self.scenario == "recommend" and (has_query or not self.user_id):
            raise ValueError("a recommendation takes a user_id and no text or image")
        if self.image_base64 and self.image_url:
            raise ValueError("give the image inline or by URL, not both")
        return self

    @property
    def has_image(self) -> bool:
        return bool(self.image_base64 or self.image_url)

    def resolved_scenario(self) -> Scenario:
        if self.scenario != "auto":
            return self.scenario
        if self.like_product_id:
            return "more_like_this"
        has_text = bool(self.text and self.text.strip())
        if not has_text and not self.has_image:
            return "recommend"
        if self.has_image and has_text:
            return "cross"
        return "image2image" if self.has_image else "text2product"


_FINITE = ConfigDict(**Contract.model_config, allow_inf_nan=False)
"""A reply's scores, prices and timing are finite: NaN or an infinity has no JSON of its own (it
is written as null, or as a bare NaN no strict reader takes), and a reply that carries one fails
the contract where it is made, or where it is read, rather than in an answer to a caller. (An
explanation is free-form; its non-finite numbers go out as null.)"""


class SearchResult(Contract):
    model_config = _FINITE

    product_id: str
    score: float
    rank: int = Field(ge=1)
    title: str = ""
    brand: str | None = None
    category_path: list[str] = Field(default_factory=list)
    price: float | None = None
    currency: str | None = None
    image_url: str | None = None
    thumbnail: str | None = Field(
        default=None,
        description="a small JPEG as a data: URI, for products sent with inline photos",
    )
    version: int | None = None
    explanation: dict[str, Any] | None = None


class SearchError(Contract):
    kind: Literal["invalid_request", "unsupported", "internal", "timeout"]
    message: str


class SearchReply(Contract):
    model_config = _FINITE

    schema_version: Literal[1] = 1
    request_id: str
    scenario: Scenario | None = None
    results: list[SearchResult] = Field(default_factory=list)
    took_ms: float = 0.0
    truncated: bool = False
    error: SearchError | None = None
