"""What the API takes and gives beyond the wire contracts: the search request less the fields
the service sets itself, a product as read from the catalogue, an event from the page, errors.

A search body is the search request contract (schemas/search.py) itself, validated by the same
model, so the HTTP API and the Kafka topic accept the same searches; the reply is the reply
contract unchanged.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from schemas._base import Contract, utc_now
from schemas.product import ProductId
from schemas.search import SearchError, SearchRequest
from schemas.user_event import EventContext, EventType, UserEvent

__all__ = ["SERVER_FIELDS", "ErrorBody", "EventIn", "ProductView", "SearchQuery"]

SERVER_FIELDS = ("request_id", "reply_topic")
"""Set by the service for each search: the correlation id and its own reply topic."""


class SearchQuery(SearchRequest):
    """A search request as an HTTP client sends it: the contract less request_id and
    reply_topic, which the service sets."""

    request_id: SkipJsonSchema[str] = Field(default_factory=lambda: uuid.uuid4().hex)
    reply_topic: SkipJsonSchema[None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_server_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [name for name in SERVER_FIELDS if name in data]
            if given:
                raise ValueError(f"{', '.join(given)}: set by the service, not by the client")
        return data

    def to_request(self) -> SearchRequest:
        return SearchRequest.model_validate(
            self.model_dump(exclude={"reply_topic"}, exclude_defaults=False)
        )


class ProductView(BaseModel):
    """A product as the catalogue holds it (the searchable fields, not the vectors)."""

    product_id: str
    title: str = ""
    brand: str | None = None
    category_path: list[str] = Field(default_factory=list)
    price: float | None = None
    currency: str | None = None
    in_stock: bool | None = None
    image_url: str | None = None
    thumbnail: str | None = Field(default=None, description="a small JPEG as a data: URI")
    version: int | None = None


class EventIn(Contract):
    """What a user did with a product, from the page: the service adds the event id and time
    and publishes it to the user-events topic."""

    user_id: str = Field(min_length=1, max_length=256)
    product_id: ProductId
    type: EventType = "click"
    context: EventContext | None = None

    def to_event(self) -> UserEvent:
        return UserEvent(
            event_id=uuid.uuid4().hex,
            user_id=self.user_id,
            product_id=self.product_id,
            type=self.type,
            timestamp=utc_now(),
            context=self.context,
        )


class ErrorBody(BaseModel):
    """Every error the API answers: the kinds a search reply's error has."""

    error: SearchError
