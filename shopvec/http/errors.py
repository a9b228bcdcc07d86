"""Errors as JSON with the kinds a search reply's error has (invalid_request, unsupported,
internal, timeout), and the request-size limit, which refuses a body before it is read whole.

Bad input is a 4xx with the reason; a failure of Kafka or Milvus a 503 or 504; nothing a
client sends is answered with a bare 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.search import SearchError
from shopvec.http.backend import BackendUnavailable

__all__ = ["BodyLimit", "error_response", "install_error_handlers", "status_for"]

log = logging.getLogger(__name__)

_STATUS = {"invalid_request": 400, "unsupported": 422, "timeout": 504, "internal": 502}
"""The HTTP status of a search reply that carries an error."""

_KIND_OF_STATUS = {400: "invalid_request", 404: "invalid_request", 405: "unsupported"}


def status_for(error: SearchError) -> int:
    return _STATUS[error.kind]


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    body = {"error": SearchError.model_validate({"kind": kind, "message": message}).model_dump()}
    return JSONResponse(body, status_code=status, **extra)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def readable(errors: list[Any]) -> str:
    """One line per problem: where, and what is wrong (never the input itself, which may be a
    photo of several megabytes)."""
    lines = []
    for error in errors[:10]:
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{_where(tuple(error.get('loc', ())))}: {msg}")
    if len(errors) > 10:
        lines.append(f"and {len(errors) - 10} more")
    return "; ".join(lines)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", readable(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _KIND_OF_STATUS.get(exc.status_code, "invalid_request")
        if exc.status_code >= 500:
            kind = "internal"
        return error_response(
            exc.status_code, kind, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return error_response(503, "internal", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "the service failed; see its log")


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413, by its Content-Length when it gives
    one and by counting otherwise; the body is read here (at most max_bytes) and handed on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(scope, send, 400, "Content-Length is not a number")
                return
            if size > self.max_bytes:
                await self._too_large(scope, send)
                return
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

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await self._refuse(
            scope,
            send,
            413,
            f"the request body is larger than {self.max_bytes} bytes "
            "(SHOPVEC_HTTP__MAX_BODY_BYTES)",
        )

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": {"kind": "invalid_request", "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
