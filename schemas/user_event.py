"""What a user did with a product, as the click trackers report it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas._base import Contract, UtcDatetime, utf8_at_most
from schemas.product import ProductId

__all__ = [
    "EventContext",
    "EventType",
    "ForgetUser",
    "UserEvent",
    "UserEventMessage",
    "parse_user_event",
]

EventId = Annotated[
    str,
    Field(min_length=1, max_length=128, description="1 to 128 characters, at most 128 bytes"),
    utf8_at_most(128),
]
"""Kept in the user's row (its recent ids, a JSON field of at most 64 KiB in Milvus) until 256
later events push it out: bounded in bytes, so that the row is."""

EventType = Literal["view", "click", "add_to_cart", "remove_from_cart", "wishlist", "purchase"]


class EventContext(Contract):
    query_id: str | None = Field(default=None, max_length=128)
    scenario: str | None = Field(default=None, max_length=32)
    position: int | None = Field(default=None, ge=0)


class UserEvent(Contract):
    """One interaction. event_id makes a redelivered event count once."""

    schema_version: Literal[1] = 1
    kind: Literal["interaction"] = "interaction"
    event_id: EventId
    user_id: str = Field(min_length=1, max_length=256)
    product_id: ProductId
    type: EventType
    timestamp: UtcDatetime
    context: EventContext | None = None


class ForgetUser(Contract):
    """A user's request to be forgotten: their vector and their share of shared counts go."""

    schema_version: Literal[1] = 1
    kind: Literal["forget"] = "forget"
    event_id: EventId
    user_id: str = Field(min_length=1, max_length=256)
    timestamp: UtcDatetime


UserEventMessage = Annotated[UserEvent | ForgetUser, Field(discriminator="kind")]
"""What the user-events topic carries: an interaction or a forget-user request."""

_adapter: TypeAdapter[UserEvent | ForgetUser] = TypeAdapter(UserEventMessage)


def parse_user_event(data: bytes | str) -> UserEvent | ForgetUser:
    """Validates one user-events body; raises pydantic.ValidationError with the reason."""
    return _adapter.validate_json(data)
