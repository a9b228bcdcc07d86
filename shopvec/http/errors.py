"""Errors as JSON with the kinds a search reply's error has (invalid_request, unsupported,
internal, timeout).

Bad input is a 4xx with the reason; Kafka or Milvus away from this service a 503, no reply in
time a 504, a search the query workers failed (or a reply that fails the contract) a 502;
nothing a client sends is answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.search import SearchError
from shopvec.http.backend import BackendUnavailable, BadReply, RequestTooLarge

__all__ = ["error_body", "error_response", "install_error_handlers", "readable", "status_for"]

log = logging.getLogger(__name__)

_STATUS = {"invalid_request": 400, "unsupported": 422, "timeout": 504, "internal": 502}
"""The HTTP status of a search reply that carries an error."""

_KIND_OF_STATUS = {400: "invalid_request", 404: "invalid_request", 405: "unsupported"}


def status_for(error: SearchError) -> int:
    return _STATUS[error.kind]


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": SearchError.model_validate({"kind": kind, "message": message}).model_dump()}


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(kind, message), status_code=status, **extra)


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

    @app.exception_handler(RequestTooLarge)
    async def too_large(request: Request, exc: RequestTooLarge) -> JSONResponse:
        return error_response(413, "invalid_request", str(exc))

    @app.exception_handler(BadReply)
    async def bad_reply(request: Request, exc: BadReply) -> JSONResponse:
        log.error("a query worker's reply failed the contract: %s", exc)
        return error_response(502, "internal", str(exc))

    @app.exception_handler(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return error_response(503, "internal", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "the service failed; see its log")
