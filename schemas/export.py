"""Writes the JSON Schema of every contract beside this module, for other languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.dead_letter import DeadLetter
from schemas.product import ProductEvent
from schemas.search import SearchReply, SearchRequest
from schemas.user_event import ForgetUser, UserEvent

__all__ = ["SCHEMA_DIR", "render_all", "write_all"]

SCHEMA_DIR = Path(__file__).parent

_CONTRACTS: dict[str, Any] = {
    "product-event": ProductEvent,
    "user-event": UserEvent,
    "forget-user": ForgetUser,
    "search-request": SearchRequest,
    "search-reply": SearchReply,
    "dead-letter": DeadLetter,
}


def render_all() -> dict[str, str]:
    """File name to file text, deterministic so a test can compare it with what is committed."""
    out = {}
    for name, model in _CONTRACTS.items():
        schema = TypeAdapter(model).json_schema(mode="validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
