"""The application factory: the API and the page on one backend, built from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shopvec.http import page, routes
from shopvec.http.backend import Backend, KafkaBackend
from shopvec.http.errors import install_error_handlers
from shopvec.http.middleware import BodyLimit, FormAsJson
from shopvec.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings, backend: Backend | None = None) -> FastAPI:
    """backend: the Kafka and Milvus one unless given (tests give the in-memory one). It is
    started with the application and closed with it."""
    chosen: Backend = backend if backend is not None else KafkaBackend(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await chosen.start()
        try:
            yield
        finally:
            await chosen.close()

    app = FastAPI(
        title="shopvec",
        summary="Search a product catalogue by words (English, Chinese), by photo, or both",
        version="1",
        lifespan=lifespan,
        # The interactive docs load their scripts from a CDN: the page works offline instead.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.backend = chosen
    install_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(page.router)
    app.add_middleware(FormAsJson)
    # Added last, so it runs first: nothing reads a body over the limit.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.http.max_body_bytes,
        in_flight_bytes=settings.http.max_body_bytes_in_flight,
    )
    return app
