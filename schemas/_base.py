"""The base every contract shares: strict about unknown fields, versioned, JSON on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["INT64_MAX", "SCHEMA_VERSION", "Contract", "UtcDatetime", "utc_now", "utf8_at_most"]

SCHEMA_VERSION = 1
"""Bumped on a change that an old reader cannot accept; readers accept their own and older."""


INT64_MAX = 2**63 - 1
"""The largest integer a Milvus INT64 field, or a JSON field's number, holds."""


def utf8_at_most(limit: int) -> AfterValidator:
    """A string's limit in UTF-8 bytes, as Milvus counts a VARCHAR's max_length (a character
    limit lets a string of Chinese, three bytes a character, past a field of the same size)."""

    def check(value: str) -> str:
        size = len(value.encode())
        if size > limit:
            raise ValueError(f"{size} bytes in UTF-8, more than {limit}")
        return value

    return AfterValidator(check)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (RFC 3339, e.g. 2026-01-31T12:00:00Z)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """A message body. Unknown fields are refused so that a producer's typo is a clear error."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)
