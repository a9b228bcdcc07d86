"""Runs the application under uvicorn until SIGTERM or SIGINT (uvicorn's own handlers finish
the requests in flight, then the backend closes and deletes its reply topic)."""

from __future__ import annotations

import gc
import logging

from shopvec.http.app import create_app
from shopvec.settings import Settings

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    import uvicorn

    h = settings.http
    config = uvicorn.Config(
        create_app(settings),
        host=h.host,
        port=h.port,
        # The process's logging is shopvec.logs'; uvicorn's loggers propagate to it.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, int(h.timeout_s)),
        server_header=False,
    )
    server = uvicorn.Server(config)
    # As in the workers (workers/_run.py): what start-up built lives as long as the process,
    # and frozen, a full collection no longer walks it in the middle of a request.
    gc.freeze()
    log.info("serving http://%s:%d/", h.host, h.port)
    server.run()
    # A port already taken, or a backend that could not start, leaves the server not started.
    return 0 if server.started else 1
