"""An honest in-memory Backend: the real SearchService (on whatever store and encoder it was
built with) answering in this process, products from its store, events kept in a list. For
tests that need no broker and no Milvus."""

from __future__ import annotations

import asyncio

from schemas.search import SearchReply, SearchRequest
from schemas.user_event import UserEvent
from shopvec.http.backend import product_view
from shopvec.http.contract import ProductView
from shopvec.search.service import SearchService
from shopvec.store.base import ProductStore

__all__ = ["MemoryBackend"]


class MemoryBackend:
    def __init__(self, service: SearchService, store: ProductStore) -> None:
        self._service = service
        self._store = store
        self.events: list[UserEvent] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def ready(self) -> bool:
        return self.started

    async def search(self, request: SearchRequest, timeout_s: float) -> SearchReply:
        return await asyncio.wait_for(asyncio.to_thread(self._service.search, request), timeout_s)

    async def product(self, product_id: str) -> ProductView | None:
        row = self._store.get([product_id]).get(product_id)
        return None if row is None else product_view(row)

    async def record(self, event: UserEvent) -> None:
        self.events.append(event)
