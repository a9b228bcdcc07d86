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
]


class DeadLetter(Contract):
    """Carries the original bytes untouched (base64), where they came from, and why they failed."""

    schema_version: Literal[1] = 1
    worker: str = Field(description="which worker gave up: indexer, query, behaviour")
    error_kind: ErrorKind
    error_message: str = Field(max_length=4096)
    topic: str
    partition: int
    offset: int
    key_base64: str | None = None
    value_base64: str | None = None
    failed_at: UtcDatetime

    @property
    def value(self) -> bytes | None:
        return None if self.value_base64 is None else base64.b64decode(self.value_base64)

    @staticmethod
    def encode(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode()
