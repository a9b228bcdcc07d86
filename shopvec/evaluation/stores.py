"""Where an evaluation's collections live: Milvus Lite in a temporary folder, or a given Milvus.

``pymilvus.MilvusClient`` opens a local ``*.db`` path with Milvus Lite in the same process, so an
evaluation needs no server; with a URI it uses that Milvus instead, under aliases no one else
uses, and drops what it created when done.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pymilvus import MilvusClient

from shopvec.evaluation.runner import StoreFactory
from shopvec.store.base import CollectionSpec, ProductStore
from shopvec.store.milvus import MilvusProductStore

__all__ = ["EvalMilvusStore", "milvus_stores", "unique_alias_prefix"]

log = logging.getLogger(__name__)


class EvalMilvusStore(MilvusProductStore):
    """``MilvusProductStore`` plus ``settle()``, which the runner calls once the corpus is in."""

    def __init__(self, client: MilvusClient, spec: CollectionSpec, *, timeout_s: float) -> None:
        super().__init__(client, spec, timeout_s=timeout_s)
        self._milvus = client
        self._settle_timeout = timeout_s

    def settle(self) -> None:
        # Sealing the growing segment lets searches use the built index: the state a
        # collection reaches by itself once writes pause, and twice as fast to query in Lite.
        self._milvus.flush(self.collection, timeout=self._settle_timeout)


def unique_alias_prefix(stem: str = "eval") -> str:
    """A prefix for collection aliases that no other run shares."""
    return f"{stem}_{uuid.uuid4().hex[:8]}"


@contextmanager
def milvus_stores(uri: str | None = None, *, timeout_s: float = 60.0) -> Iterator[StoreFactory]:
    """Yields a factory of ``MilvusProductStore``s on one client.

    Without ``uri``: Milvus Lite on a file in a temporary folder, removed afterwards. With it:
    that Milvus; the collections made here are dropped on the way out.
    """
    # pymilvus logs an ERROR for every lookup of an alias that does not exist yet, which is how
    # MilvusProductStore.ensure learns it must create one; Milvus Lite's in-process server logs
    # one for each call the client makes that it does not implement (AllocTimestamp), with no
    # effect on the results; jieba, which analyses the full-text fields, says at DEBUG that it
    # loaded its dictionary. None is news to the reader of an evaluation.
    # jieba sets its own logger's level when imported, so it is imported first.
    importlib.import_module("jieba")
    quiet = [logging.getLogger(name) for name in ("pymilvus", "grpc._server", "jieba")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="shopvec-eval-") as folder:
        client = MilvusClient(uri=uri or f"{folder}/eval.db", timeout=timeout_s)
        made: list[CollectionSpec] = []

        def factory(spec: CollectionSpec) -> ProductStore:
            made.append(spec)
            return EvalMilvusStore(client, spec, timeout_s=timeout_s)

        try:
            yield factory
        finally:
            if uri is not None:
                for spec in made:
                    try:
                        client.drop_alias(spec.alias, timeout=timeout_s)
                        client.drop_collection(spec.name, timeout=timeout_s)
                    except Exception as exc:  # cleaning up must not hide the run's own error
                        log.warning("could not drop %s: %s", spec.name, exc)
            client.close()
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)
