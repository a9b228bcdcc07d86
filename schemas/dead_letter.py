"""The envelope for a message that could not be processed."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import Field

from schemas._base import Contract, UtcDatetime

__all__ = ["DeadLetter", "ErrorKind"]

ErrorKind = Literal[
    "not_json",
    "schema_violation",
    "image_unreachable",
    "image_undecodable",
    "image_too_large",
    "forbidden_url",
    "unprocessable",
    "oversize",
    "forbidden_reply_topic",
]


class DeadLetter(Contract):
    """Carries the original bytes (base64), where they came from, and why they failed.

    A dead letter has a bounded size: an original too large to carry whole is cut, and
    value_truncated says so; value_size and value_sha256 always describe the whole original,
    so it can be found again upstream and a replay can be checked against it."""

    schema_version: Literal[1] = 1
    worker: str = Field(description="which worker gave up: indexer, query, behaviour")
    error_kind: ErrorKind
    error_message: str = Field(max_length=4096)
    topic: str
    partition: int
    offset: int
    key_base64: str | None = None
    value_base64: str | None = None
    value_size: int | None = Field(default=None, ge=0, description="bytes of the whole original")
    value_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="of the whole original value"
    )
    value_truncated: bool = Field(
        default=False, description="value_base64 holds only the start of the original"
    )
    failed_at: UtcDatetime

    @property
    def value(self) -> bytes | None:
        return None if self.value_base64 is None else base64.b64decode(self.value_base64)

    @staticmethod
    def encode(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode()
