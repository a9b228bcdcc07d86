"""The JSON API: searches (a JSON body, or a photo as multipart), products, user events,
health."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from schemas.product import MAX_INLINE_IMAGE_BYTES, ProductId
from schemas.search import SearchReply
from shopvec.http.backend import Backend
from shopvec.http.contract import ErrorBody, EventIn, ProductView, SearchQuery
from shopvec.http.errors import error_response, readable, status_for
from shopvec.settings import Settings

__all__ = ["router"]

router = APIRouter()

MAX_PHOTO_BYTES = MAX_INLINE_IMAGE_BYTES * 3 // 4
"""The largest photo whose base64 fits the request contract's inline image."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "the query workers refused the search (the reason is in error.message)",
        413: "the body is larger than SHOPVEC_HTTP__MAX_BODY_BYTES, or the search too large "
        "for the broker",
        422: "the body does not match the contract",
        502: "the query workers failed the search (their store or encoder), or answered with a "
        "reply that does not match the contract",
        503: "Kafka or Milvus did not answer, or too much is in progress; try again",
        504: "no reply within SHOPVEC_HTTP__TIMEOUT_S",
    }.items()
}


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _answer(request: Request, query: SearchQuery) -> Response:
    settings = _settings(request)
    try:
        reply = await _backend(request).search(query.to_request(), settings.http.timeout_s)
    except TimeoutError:
        return error_response(
            504,
            "timeout",
            f"no reply from the query workers within {settings.http.timeout_s}s",
        )
    if reply.error is not None:
        return JSONResponse(reply.model_dump(mode="json"), status_code=status_for(reply.error))
    return JSONResponse(reply.model_dump(mode="json"))


@router.post(
    "/v1/search",
    response_model=SearchReply,
    responses=_ERRORS,
    summary="Search by words, a photo (base64 or URL), a product (more like this) or a user",
)
async def search(request: Request, query: SearchQuery) -> Response:
    return await _answer(request, query)


@router.post(
    "/v1/search/photo",
    response_model=SearchReply,
    responses=_ERRORS,
    summary="Search with an uploaded photo (multipart), with words and filters as JSON",
)
async def search_photo(
    request: Request,
    photo: Annotated[UploadFile, File(description="a JPEG, PNG, GIF or WebP photo")],
    query: Annotated[
        str,
        Form(
            description="the rest of the search as JSON (text, filters, top_k ...), as for "
            "POST /v1/search without an image"
        ),
    ] = "{}",
) -> Response:
    data = await photo.read(MAX_PHOTO_BYTES + 1)
    if not data:
        return error_response(422, "invalid_request", "photo: the file is empty")
    if len(data) > MAX_PHOTO_BYTES:
        return error_response(413, "invalid_request", f"photo: larger than {MAX_PHOTO_BYTES} bytes")
    try:
        fields = json.loads(query)
    except ValueError as exc:
        return error_response(422, "invalid_request", f"query: not JSON ({exc})")
    except RecursionError:  # Python's json reads about a thousand levels; 2 KB of [ pass that
        return error_response(422, "invalid_request", "query: nested too deep")
    if not isinstance(fields, dict):
        return error_response(422, "invalid_request", "query: a JSON object, please")
    for name in ("image_base64", "image_url"):
        if name in fields:
            return error_response(422, "invalid_request", f"query.{name}: the photo is the file")
    fields["image_base64"] = base64.b64encode(data).decode()
    try:
        parsed = SearchQuery.model_validate(fields)
    except ValidationError as exc:
        return error_response(422, "invalid_request", readable(list(exc.errors())))
    return await _answer(request, parsed)


@router.get(
    "/v1/products/{product_id}",
    response_model=ProductView,
    responses={404: {"model": ErrorBody, "description": "no such product"}, **_ERRORS},
    summary="One product as the catalogue holds it",
)
async def product(request: Request, product_id: ProductId) -> Response:
    found = await _backend(request).product(product_id)
    if found is None:
        return error_response(404, "invalid_request", f"no product {product_id!r}")
    return JSONResponse(found.model_dump(mode="json"))


@router.post(
    "/v1/events",
    status_code=202,
    responses=_ERRORS,
    summary="Record what a user did with a product (personalisation learns from it)",
)
async def event(request: Request, body: EventIn) -> Response:
    recorded = body.to_event()
    await _backend(request).record(recorded)
    return JSONResponse({"event_id": recorded.event_id}, status_code=202)


@router.get("/healthz", summary="The process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Connected: searches can go out and replies come back")
async def readyz(request: Request) -> Response:
    if _backend(request).ready():
        return JSONResponse({"status": "ready"})
    return error_response(503, "internal", "not connected yet")
