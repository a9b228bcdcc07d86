"""Keeps the stores' collections loaded.

Milvus searches, gets and queries only a loaded collection, and a collection does not stay
loaded across a restart of the Milvus Lite server (nor, always, of a Milvus query node): it
comes back released, and every read fails until someone loads it. So a store loads its
collection when it starts (`CollectionLoader.ensure`), and its Milvus calls, marked
`@reloading`, load it again and retry once when Milvus answers that it is not loaded.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from pymilvus import MilvusClient
from pymilvus.client.types import LoadState

from shopvec.errors import is_released

__all__ = ["LOAD_TIMEOUT_S", "CollectionLoader", "Reloadable", "reloading"]

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 120.0
"""How long a load may take. Longer than a call's timeout: Milvus Lite loads synchronously,
reading (or, the first time, building) every segment's index before it answers."""

P = ParamSpec("P")
R = TypeVar("R")


class CollectionLoader:
    """Loads one collection of one client."""

    def __init__(
        self, client: MilvusClient, name: str, *, timeout_s: float = LOAD_TIMEOUT_S
    ) -> None:
        self._client = client
        self.name = name
        self._timeout = timeout_s

    def ensure(self, *others: str) -> None:
        """Loads the collection, and any others named, unless Milvus says they are loaded."""
        for name in (self.name, *others):
            state = self._client.get_load_state(name, timeout=self._timeout).get("state")
            if state != LoadState.Loaded:
                self._load(name, f"it was {state}")

    def reload(self, reason: BaseException) -> None:
        """Loads the collection after Milvus answered that it is not; loading one that is
        loaded by now (another thread was first) costs a round trip."""
        self._load(self.name, str(reason))

    def _load(self, name: str, why: str) -> None:
        log.warning("loading collection %s: %s", name, why)
        self._client.load_collection(name, timeout=self._timeout)
        log.info("collection %s loaded", name)


class Reloadable(Protocol):
    """A store whose calls `reloading` guards."""

    @property
    def loader(self) -> CollectionLoader: ...


S = TypeVar("S", bound=Reloadable)


def reloading(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Marks a store method that calls Milvus on the store's collection: when Milvus answers
    that the collection is not loaded, it is loaded and the method runs once more. A method
    may make several calls; each must be safe to repeat (reads, upserts and deletes by key)."""

    @functools.wraps(method)
    def call(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            if not is_released(exc):
                raise
            self.loader.reload(exc)
        # Outside the handler: a second failure is its own, not one "during handling" the first.
        return method(self, *args, **kwargs)

    return call
