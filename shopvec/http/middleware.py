"""What happens to a request before a route sees it: the size limit, which refuses a body
before it is read whole, and JSON read as JSON whatever form content type a bare `curl -d`
gives it."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopvec.http.errors import error_body

__all__ = ["BodyLimit", "FormAsJson"]

JSON_PATHS = ("/v1/search", "/v1/events")


class FormAsJson:
    """`curl -d '{"text": ...}'` sends application/x-www-form-urlencoded; the JSON routes take
    no form, so such a body is read as the JSON it is (and refused with the reason if it is
    not)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in JSON_PATHS:
            headers = list(scope.get("headers") or [])
            for i, (name, value) in enumerate(headers):
                if name == b"content-type" and value.split(b";")[0].strip().lower() == (
                    b"application/x-www-form-urlencoded"
                ):
                    headers[i] = (b"content-type", b"application/json")
                    scope = dict(scope, headers=headers)
                    break
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413, by its Content-Length when it gives
    one and by counting otherwise; the body is read here (at most max_bytes) and handed on.

    And the bodies of all requests in progress together to `in_flight_bytes`: a request whose
    body would pass it is answered 503 with Retry-After as soon as it would. A search with a
    photo holds several times its body while it waits for its reply (parsed, decoded,
    re-encoded for the broker), and nothing else bounded how many came at once."""

    def __init__(self, app: ASGIApp, max_bytes: int, in_flight_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.in_flight_bytes = in_flight_bytes or 2**62
        self.held = 0
        """Body bytes of the requests in progress (one event loop: no lock)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        reserved = 0
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(scope, send, 400, "Content-Length is not a number")
                return
            if size > self.max_bytes:
                await self._too_large(scope, send)
                return
        # Taken as the bytes arrive, not as declared: connections that declare a body and send
        # nothing hold none of the budget.
        try:
            chunks: list[bytes] = []
            total = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > self.max_bytes:
                    await self._too_large(scope, send)
                    return
                if total > reserved:
                    if not self._reserve(total - reserved):
                        await self._busy(scope, send)
                        return
                    reserved = total
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.held -= reserved

    def _reserve(self, size: int) -> bool:
        """Takes size bytes of the budget; a request alone may always have it."""
        if self.held and self.held + size > self.in_flight_bytes:
            return False
        self.held += size
        return True

    async def _busy(self, scope: Scope, send: Send) -> None:
        await self._refuse(
            scope,
            send,
            503,
            f"the requests in progress already hold {self.held} bytes of bodies "
            "(SHOPVEC_HTTP__MAX_BODY_BYTES_IN_FLIGHT); try again shortly",
            retry_after=True,
        )

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await self._refuse(
            scope,
            send,
            413,
            f"the request body is larger than {self.max_bytes} bytes "
            "(SHOPVEC_HTTP__MAX_BODY_BYTES)",
        )

    @staticmethod
    async def _refuse(
        scope: Scope, send: Send, status: int, message: str, *, retry_after: bool = False
    ) -> None:
        kind = "internal" if status >= 500 else "invalid_request"
        body = json.dumps(error_body(kind, message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if retry_after:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
