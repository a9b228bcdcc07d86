"""A worker's HTTP side: /healthz (the loop is alive), /readyz (consuming), /metrics."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["OpsServer"]


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    outer._answer(self, 200 if alive() else 503, b"ok" if alive() else b"dead")
                elif self.path == "/readyz":
                    ok = ready()
                    outer._answer(self, 200 if ok else 503, b"ready" if ok else b"not ready")
                elif self.path == "/metrics":
                    outer._answer(self, 200, generate_latest(registry), CONTENT_TYPE_LATEST)
                else:
                    outer._answer(self, 404, b"not found")

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would drown the worker's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @staticmethod
    def _answer(
        handler: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "text/plain"
    ) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
