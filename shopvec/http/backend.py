"""Where the API's answers come from: the Backend protocol and its real implementation, the
query workers over Kafka request/reply and the products collection in Milvus.

The service owns one reply topic, shopvec.search.replies.<uuid> (inside the reply-topic
pattern the query workers allow), created when it starts and deleted when it stops, as the
Python client does: workers never create topics. Every search in flight waits on that one
topic, matched to its request by the correlation id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from schemas.search import SearchReply, SearchRequest
from schemas.user_event import UserEvent
from schemas.wire import HEADER_CONTENT_TYPE, HEADER_SCHEMA_VERSION
from shopvec.client import SearchNotSent, SearchReplyInvalid
from shopvec.http.contract import ProductView
from shopvec.search.service import product_fields
from shopvec.settings import Settings

__all__ = [
    "Backend",
    "BackendUnavailable",
    "BadReply",
    "KafkaBackend",
    "RequestTooLarge",
    "product_view",
]

log = logging.getLogger(__name__)

_PRODUCT_FIELDS = ["id", "version", "title", "brand", "price", "in_stock", "doc", "deleted"]


MAX_LOOKUPS_WAITING = 64
"""Product lookups running or queued for Milvus at once; more are answered 503 at once, so that
a slow Milvus cannot pile up requests without bound."""


class BackendUnavailable(RuntimeError):
    """Kafka or Milvus did not answer: the client may try again (503)."""


class RequestTooLarge(ValueError):
    """The broker refused the search for its size: trying again cannot help (413)."""


class BadReply(RuntimeError):
    """The query workers answered with a reply that does not match the contract (502)."""


class Backend(Protocol):
    async def search(self, request: SearchRequest, timeout_s: float) -> SearchReply:
        """The reply to `request`; raises TimeoutError when none came in time."""
        ...

    async def product(self, product_id: str) -> ProductView | None: ...

    async def record(self, event: UserEvent) -> None:
        """Publishes a user event (personalisation learns from it)."""
        ...

    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def product_view(row: dict[str, Any]) -> ProductView:
    return ProductView(product_id=row["id"], in_stock=row.get("in_stock"), **product_fields(row))


class KafkaBackend:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None  # shopvec.client.SearchClient, once started
        self._producer: Any = None
        self._milvus: Any = None
        self._milvus_lock = threading.Lock()
        # Threads of their own for Milvus's lookups, which wait up to its timeout while it is
        # slow: in the default pool they held up every route's sends.
        self._lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-milvus")
        self._looking_up = 0
        """Lookups waiting or running (the event loop's count: no lock)."""
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def reply_topic(self) -> str | None:
        return None if self._client is None else str(self._client.reply_topic)

    async def start(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        from confluent_kafka import Producer

        from shopvec.client import SearchClient
        from shopvec.kafka.config import producer_config

        self._client = SearchClient(self._settings, timeout_s=self._settings.http.timeout_s)
        self._producer = Producer(producer_config(self._settings, **{"linger.ms": 0}))
        # The events' delivery reports, which answer their requests.
        self._poller = threading.Thread(target=self._poll, name="http-events", daemon=True)
        self._poller.start()
        log.info("searches go out on %s", self._client.reply_topic)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)
        self._lookups.shutdown(wait=False, cancel_futures=True)
        if self._producer is not None:
            self._producer.flush(5)
        if self._client is not None:
            self._client.close()
        if self._milvus is not None:
            self._milvus.close()

    def ready(self) -> bool:
        """Started, with the threads that read replies and delivery reports alive."""
        return (
            self._client is not None
            and self._client.reading
            and self._poller is not None
            and self._poller.is_alive()
        )

    async def search(self, request: SearchRequest, timeout_s: float) -> SearchReply:
        client = self._client
        if client is None:
            raise BackendUnavailable("the service is starting")
        try:
            future = await asyncio.to_thread(client.send, request)
            # A timeout cancels the future; forgotten, a late reply is dropped by the reader.
            try:
                reply: SearchReply = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
            finally:
                client.forget(request.request_id)
        except SearchNotSent as exc:  # the producer's queue is full, the broker refused it
            if exc.too_large:
                raise RequestTooLarge(f"the search is too large for the broker: {exc}") from exc
            raise BackendUnavailable(f"could not send the search: {exc}") from exc
        except SearchReplyInvalid as exc:
            raise BadReply(str(exc)) from exc
        return reply

    async def record(self, event: UserEvent) -> None:
        """Answers once the broker acknowledged the event, without holding a thread while it
        waits (a flush here held one of the default pool's few for the whole timeout)."""
        if self._producer is None:
            raise BackendUnavailable("the service is starting")
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[None] = loop.create_future()

        def settle(future: asyncio.Future[None], err: Any) -> None:
            if future.done():
                return
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(BackendUnavailable(f"the event was not stored: {err}"))

        try:
            self._producer.produce(
                self._settings.topics.user_events,
                key=event.user_id.encode(),
                value=event.to_bytes(),
                headers=[
                    (HEADER_SCHEMA_VERSION, str(event.schema_version).encode()),
                    (HEADER_CONTENT_TYPE, b"application/json"),
                ],
                on_delivery=lambda err, msg: loop.call_soon_threadsafe(settle, acknowledged, err),
            )
        except Exception as exc:
            raise BackendUnavailable(f"could not publish the event: {exc}") from exc
        try:
            await asyncio.wait_for(acknowledged, self._settings.http.timeout_s)
        except TimeoutError:
            raise BackendUnavailable("the broker did not acknowledge the event in time") from None

    async def product(self, product_id: str) -> ProductView | None:
        if self._looking_up >= MAX_LOOKUPS_WAITING:
            raise BackendUnavailable("too many product lookups wait for Milvus; try again")
        self._looking_up += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._lookups, self._product, product_id)
        finally:
            self._looking_up -= 1

    def _product(self, product_id: str) -> ProductView | None:
        from shopvec.runtime import milvus_client
        from shopvec.store.milvus import key_filter

        m = self._settings.milvus
        try:
            with self._milvus_lock:
                if self._milvus is None:
                    self._milvus = milvus_client(self._settings)
                client = self._milvus
            rows = client.query(
                m.collection,
                filter=key_filter("id", [product_id]),
                output_fields=_PRODUCT_FIELDS,
                timeout=m.timeout_s,
            )
        except Exception as exc:
            if _missing_collection(exc):
                return None  # nothing indexed yet
            raise BackendUnavailable(f"the catalogue did not answer: {exc}") from exc
        live = [r for r in rows if not r.get("deleted")]
        return product_view(live[0]) if live else None


def _missing_collection(exc: Exception) -> bool:
    """Milvus' answer when the collection (or alias) does not exist yet: code 100."""
    text = str(exc).lower()
    return getattr(exc, "code", None) == 100 or (
        "collection" in text and ("not exist" in text or "not found" in text)
    )
