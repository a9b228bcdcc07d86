"""The HTTP API's limits on what requests hold at once, and the search client's answer to a
request the broker did not take, with in-memory parts."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError

from shopvec.client import SearchClient, SearchNotSent
from shopvec.http.middleware import BodyLimit
from tests.unit.kafka_fakes import FakeMessage


async def _post(app: Any, size: int) -> tuple[int, dict[bytes, bytes]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/search",
        "headers": [(b"content-length", str(size).encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x" * size, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"])


def test_bodies_in_progress_are_bounded_together() -> None:
    """A second large body while the first is in progress is answered 503 at once; a small
    one still goes in; a body over the budget alone goes in when nothing else is held."""

    async def scenario() -> None:
        gate = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        limit = BodyLimit(app, max_bytes=10_000, in_flight_bytes=12_000)
        first = asyncio.create_task(_post(limit, 8_000))
        while limit.held < 8_000:
            await asyncio.sleep(0)
        status, headers = await _post(limit, 8_000)
        assert status == 503 and headers[b"retry-after"] == b"1"
        small = asyncio.create_task(_post(limit, 100))
        while limit.held < 8_100:
            await asyncio.sleep(0)
        gate.set()
        assert (await first)[0] == 200 and (await small)[0] == 200
        assert limit.held == 0
        alone = BodyLimit(app, max_bytes=10_000, in_flight_bytes=1_024)
        assert (await _post(alone, 9_000))[0] == 200

    asyncio.run(scenario())


def _client() -> SearchClient:
    """A client's bookkeeping without its broker connections."""
    client = object.__new__(SearchClient)
    client._pending = {}
    client._lock = threading.Lock()
    client._requests = None  # type: ignore[assignment]
    return client


def test_a_request_the_broker_did_not_take_fails_its_caller_at_once() -> None:
    client = _client()
    waiting: Future[Any] = client.expect("r1")
    big = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    client._stored(big, FakeMessage(-1, b"{}", key=b"r1"))  # type: ignore[arg-type]
    with pytest.raises(SearchNotSent) as refused:
        waiting.result(0)
    assert refused.value.too_large and client.waiting == 0


def test_two_searches_cannot_wait_under_one_id() -> None:
    client = _client()
    client.expect("r1")
    with pytest.raises(ValueError, match="already waiting"):
        client.expect("r1")
    client.forget("r1")
    client.expect("r1")


def test_the_async_client_sends_again_under_the_same_id_and_gets_the_reply() -> None:
    """Its retry sent the request again through `send`, whose duplicate-id check refused it."""
    from schemas.search import SearchReply, SearchRequest
    from shopvec.client import AsyncSearchClient

    client = _client()
    client._timeout_s, client._retries = 0.2, 1
    sends: list[str] = []

    def send_again(request: SearchRequest) -> None:
        sends.append(request.request_id)
        future = client._pending[request.request_id]
        future.set_result(SearchReply(request_id=request.request_id))

    client._send = send_again  # type: ignore[method-assign]
    # The first send gets no reply.
    client.send = lambda request: client.expect(request.request_id)  # type: ignore[method-assign]
    wrapper = object.__new__(AsyncSearchClient)
    wrapper._client = client
    reply = asyncio.run(wrapper.request(SearchRequest(request_id="r9", text="red dress")))
    assert reply.request_id == "r9" and sends == ["r9"] and client.waiting == 0
