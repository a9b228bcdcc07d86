"""What every worker process shares: malloc set up, logging, signals, the ops endpoint, the loop
thread."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from shopvec.allocator import keep_freed_memory
from shopvec.kafka.stream import StreamRuntime
from shopvec.logs import configure_logging
from shopvec.ops import OpsServer
from shopvec.settings import Settings
from shopvec.threads import limit_blas_threads

__all__ = ["load_settings", "run_worker"]

log = logging.getLogger("workers")


def run_worker(
    name: str, settings: Settings, runtime: StreamRuntime[Any], registry: CollectorRegistry
) -> int:
    """Runs the worker's loop until SIGTERM or SIGINT; it drains, writes and commits, then
    returns. Liveness is the loop's progress; readiness also asks that it can do its work."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: signal %s, draining", name, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run(stop)
        except BaseException as exc:
            failure.append(exc)
            log.exception("%s: loop failed", name)
            stop.set()

    limit_blas_threads(settings.blas_threads)
    # What start-up built (modules, models, weights: hundreds of thousands of objects) lives as
    # long as the process. Frozen, a full collection no longer walks it; unfrozen, each full
    # collection walks it all, a pause in the middle of whatever the worker was answering.
    gc.freeze()
    thread = threading.Thread(target=target, name=name)
    ops = None
    if settings.ops.port:
        ops = OpsServer(
            settings.ops.host,
            settings.ops.port,
            registry,
            alive=lambda: thread.is_alive() and runtime.health.alive(),
            ready=lambda: thread.is_alive() and runtime.health.ready(),
        ).start()
    thread.start()
    log.info("%s: started", name)
    while thread.is_alive():
        thread.join(0.5)
    if ops is not None:
        ops.stop()
    # A failed loop exits non-zero so the orchestrator restarts the process.
    return 1 if failure else 0


def load_settings() -> Settings:
    """Also sets malloc up before the worker starts any thread (shopvec.allocator), once logging
    is configured, so that a C library that refuses says so in the worker's log."""
    settings = Settings()
    configure_logging(settings.log_level)
    keep_freed_memory(settings.malloc_keep_mb)
    log.info("settings", extra={"settings": settings.redacted()})
    return settings
