"""A worker's health as its probes see it: the loop's progress (liveness) and whether it can do
its work now (readiness), with the reason when it cannot."""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Health"]


class Health:
    """stall_s: how long the loop may go without a sign of progress before it counts as stuck.
    Waiting out a transient fault is progress (a restart would not cure it); a loop that stops
    turning is not."""

    def __init__(self, stall_s: float = 120.0) -> None:
        self._stall_s = stall_s
        self._last_beat = time.monotonic()
        self.assigned = threading.Event()
        """Set once partitions are first assigned: the worker is part of its group."""
        self._trouble: str | None = None
        self._lock = threading.Lock()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def trouble(self, reason: str) -> None:
        """The worker cannot do its work until someone or something fixes reason."""
        with self._lock:
            self._trouble = reason

    def clear(self) -> None:
        with self._lock:
            self._trouble = None

    @property
    def reason(self) -> str | None:
        return self._trouble

    def alive(self) -> bool:
        return time.monotonic() - self._last_beat < self._stall_s

    def ready(self) -> bool:
        return self.assigned.is_set() and self._trouble is None and self.alive()

    def describe(self) -> dict[str, Any]:
        return {
            "alive": self.alive(),
            "ready": self.ready(),
            "assigned": self.assigned.is_set(),
            "seconds_since_progress": round(time.monotonic() - self._last_beat, 1),
            "trouble": self._trouble,
        }
