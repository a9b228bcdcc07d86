"""The supervisor of the embedded stack: keeps Milvus Lite and the workers running until `down`.

`python -m shopvec.supervise --home H` runs as its own process, started by `shopvec up`. What it
is to keep running is <home>/supervisor-spec.json, written only by the stack (`up` adds to it,
`stop` and `down` take from it); what it is doing is <home>/supervisor.json, written only here,
atomically, whenever something changes. A child that exits is started again after a backoff
(1 s doubling to 30 s; back to 1 s once a run lasted a minute). A child taken out of the spec is
stopped (SIGTERM so that it drains, SIGKILL after the timeout), workers before Milvus. On SIGTERM
the supervisor stops all its children the same way, then exits.

The Tansu broker is not supervised: it keeps its topics in memory, so a restarted one would be
an empty one. This module also owns the process primitives the stack shares (start ticks, the
log's last error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from shopvec.text import printable

__all__ = [
    "SPEC_FILE",
    "STATE_FILE",
    "Backoff",
    "ChildSpec",
    "ChildStatus",
    "Supervisor",
    "describe_exit",
    "last_error",
    "main",
    "read_spec",
    "read_state",
    "start_ticks",
    "write_json",
    "write_spec",
]

# Named, not __name__: run as `python -m`, this module is __main__.
log = logging.getLogger("shopvec.supervise")

SPEC_FILE = "supervisor-spec.json"
STATE_FILE = "supervisor.json"

_ERROR_CHARS = 300
_LOG_TAIL_BYTES = 64 * 1024


# -- process primitives --------------------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of a pid: a pid reused by another process has another one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _has_exited(popen: subprocess.Popen[bytes]) -> bool:
    """Whether a child has exited, leaving it unreaped: while its zombie holds the pid, the pid
    (its process group's id) cannot be reused, so killing that group stays safe."""
    if popen.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


# -- what a log says went wrong ---------------------------------------------------------------

_ERROR_WORDS = re.compile(r"\b(error|exception|fatal|panic|critical)\b", re.IGNORECASE)
_TRACEBACK = "Traceback (most recent call last):"


def _json_error(line: str) -> str | None:
    """The message of a JSON log line at level error or worse (shopvec.logs writes these)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or str(record.get("level", "")).lower() not in (
        "error",
        "critical",
        "fatal",
    ):
        return None
    message = str(record.get("msg", record.get("message", "")))
    exc = str(record.get("exc") or "").strip().splitlines()
    return f"{message}: {exc[-1]}" if exc else message


def last_error(text: str, *, exit_code: int | None = None) -> str | None:
    """The most telling line of what a process wrote before it exited: the exception line of its
    last traceback, or its last line that reports an error, whichever came later. With neither,
    the last line of a process that exited non-zero (a usage error, say); None when it exited
    cleanly or by a signal and said nothing about an error."""
    # Made printable first (a log line can hold anything, and a terminal obeys what it is sent);
    # a colour code before ERROR would also hide the word from the pattern.
    lines = [printable(line).rstrip() for line in text.split("\n")]
    found: str | None = None
    for i, line in enumerate(lines):
        if line.startswith(_TRACEBACK):
            # The frames are indented; the exception's own line is the first that is not.
            exc = next((n for n in lines[i + 1 :] if n and not n[0].isspace()), None)
            found = exc or line
        elif (message := _json_error(line)) is not None:
            found = message
        elif _ERROR_WORDS.search(line) and not line[:1].isspace():
            found = line
    if found is None and exit_code:
        found = next((line for line in reversed(lines) if line.strip()), None)
    if found is None:
        return None
    found = found.strip()
    return found[: _ERROR_CHARS - 1] + "…" if len(found) > _ERROR_CHARS else found or None


def describe_exit(code: int | None, signame: str | None) -> str | None:
    if signame:
        return f"killed by {signame}"
    if code is not None:
        return f"exit {code}"
    return None


# -- the restart policy --------------------------------------------------------------------------


@dataclass
class Backoff:
    """How long to wait before starting a process again: `initial_s` after its first exit,
    doubling on each exit after a short run, at most `max_s`; a run of `reset_after_s` or more
    counts as healthy and starts the sequence over."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0
    failures: int = field(default=0, init=False)

    def next_delay(self, uptime_s: float) -> float:
        if uptime_s >= self.reset_after_s:
            self.failures = 0
        # The exponent is bounded so a process failing for days does not overflow a float.
        delay = min(self.max_s, self.initial_s * self.factor ** min(self.failures, 64))
        self.failures += 1
        return delay


# -- the files shared with the stack -------------------------------------------------------------


@dataclass
class ChildSpec:
    """A process the supervisor is to keep running."""

    name: str
    cmd: list[str]
    log_path: str
    env: dict[str, str] | None = None  # None: the supervisor's own environment
    cwd: str | None = None
    port: int | None = None
    stop_order: int = 0  # lower stops first: workers drain before Milvus goes


@dataclass
class ChildStatus:
    """What the supervisor last knew of a child; pid and start_ticks are those of its latest
    run, which may have exited since (`alive` tells)."""

    name: str
    cmd: list[str]
    log_path: str
    port: int | None = None
    pid: int | None = None
    start_ticks: int | None = None
    state: str = "starting"  # starting, running, waiting (to be started again)
    restarts: int = 0
    exits: int = 0
    last_exit_code: int | None = None
    last_exit_signal: str | None = None
    last_error: str | None = None
    started_at: float | None = None  # wall clock, seconds since the epoch
    next_start_at: float | None = None

    def alive(self) -> bool:
        return self.pid is not None and start_ticks(self.pid) == self.start_ticks

    @property
    def last_exit(self) -> str | None:
        return describe_exit(self.last_exit_code, self.last_exit_signal)


def write_json(path: Path, value: Any, *, private: bool = False) -> None:
    """Replaces `path` in one step, so a reader sees the old content or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as out:
        json.dump(value, out, indent=2)
    tmp.replace(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def read_spec(home: Path) -> tuple[list[ChildSpec], float]:
    """The children the supervisor is to keep running, and how long each may take to stop."""
    data = _read_json(home / SPEC_FILE) or {}
    children = [ChildSpec(**c) for c in data.get("children", [])]
    return children, float(data.get("stop_timeout_s", 20.0))


def write_spec(home: Path, children: Sequence[ChildSpec], stop_timeout_s: float) -> None:
    # Private: the workers' environments carry the settings' secrets in clear.
    data = {"stop_timeout_s": stop_timeout_s, "children": [asdict(c) for c in children]}
    write_json(home / SPEC_FILE, data, private=True)


def read_state(home: Path) -> tuple[int | None, list[ChildStatus]]:
    """The supervisor's pid and its children as it last wrote them."""
    data = _read_json(home / STATE_FILE) or {}
    return data.get("pid"), [ChildStatus(**c) for c in data.get("children", [])]


# -- the supervisor ------------------------------------------------------------------------------


@dataclass
class _Child:
    spec: ChildSpec
    status: ChildStatus
    backoff: Backoff
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic
    log_offset: int = 0
    next_start: float = 0.0  # monotonic


class Supervisor:
    def __init__(
        self,
        home: Path,
        *,
        backoff: Callable[[], Backoff] = Backoff,
        poll_s: float = 0.2,
    ) -> None:
        self.home = home
        self.backoff = backoff
        self.poll_s = poll_s
        self.children: dict[str, _Child] = {}
        self._stop_timeout_s = 20.0
        self._spec_key: tuple[int, int] | None = None
        self._specs: list[ChildSpec] = []
        self._published: Any = None

    def run(self, stop: threading.Event) -> None:
        """Keeps the spec's children running until `stop` is set or the home is removed, then
        stops them all."""
        try:
            while not stop.is_set() and self.home.is_dir():
                self.step()
                stop.wait(self.poll_s)
        finally:
            self._stop(list(self.children.values()))
            self.publish()

    def step(self) -> None:
        specs = self._read_spec()
        wanted = {s.name for s in specs}
        self._reap()
        self._stop([c for c in self.children.values() if c.spec.name not in wanted])
        now = time.monotonic()
        for spec in specs:
            child = self.children.get(spec.name)
            if child is None:
                child = self.children[spec.name] = _Child(
                    spec, ChildStatus(spec.name, spec.cmd, spec.log_path, spec.port), self.backoff()
                )
            child.spec = spec  # a later `up` may have changed it; it applies from the next start
            if child.popen is None and now >= child.next_start:
                self._start(child)
        self.publish()

    # -- the spec ---------------------------------------------------------------------------

    def _read_spec(self) -> list[ChildSpec]:
        path = self.home / SPEC_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            self._spec_key, self._specs = None, []
            return self._specs
        key = (st.st_mtime_ns, st.st_ino)
        if key != self._spec_key:
            try:
                self._specs, self._stop_timeout_s = read_spec(self.home)
                self._spec_key = key
            except (OSError, ValueError, TypeError) as exc:
                # Written atomically, so this is a file someone else wrote: keep what we had.
                log.error("cannot read %s: %s", path, exc)
        return self._specs

    # -- starting and reaping ---------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        spec, status = child.spec, child.status
        log_path = Path(spec.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if status.started_at is not None:
            status.restarts += 1
        status.cmd, status.log_path, status.port = spec.cmd, spec.log_path, spec.port
        status.started_at, status.next_start_at = time.time(), None
        child.started = time.monotonic()
        try:
            with open(log_path, "ab") as out:
                child.log_offset = out.tell()
                child.popen = subprocess.Popen(
                    spec.cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=spec.env,
                    cwd=spec.cwd,
                    start_new_session=True,  # its own process group: stopping it stops its own
                )
        except OSError as exc:
            self._exited(child, None, None, f"cannot start: {exc}")
            return
        ticks = None
        for _ in range(50):
            ticks = start_ticks(child.popen.pid)
            if ticks is not None or child.popen.poll() is not None:
                break
            time.sleep(0.01)
        status.pid, status.start_ticks, status.state = child.popen.pid, ticks, "running"
        log.info("started %s (pid %s, restart %d)", spec.name, status.pid, status.restarts)

    def _reap(self) -> None:
        for child in self.children.values():
            if child.popen is None or not _has_exited(child.popen):
                continue
            # Whatever it left in its process group (Milvus Lite's server, say) would hold the
            # port its next run needs.
            _kill_group(child.popen.pid, signal.SIGKILL)
            code = child.popen.wait()
            child.popen = None
            signame = signal.Signals(-code).name if code < 0 else None
            self._exited(child, code if code >= 0 else None, signame, None)

    def _exited(
        self, child: _Child, code: int | None, signame: str | None, error: str | None
    ) -> None:
        status = child.status
        status.exits += 1
        status.last_exit_code, status.last_exit_signal = code, signame
        status.last_error = error or last_error(
            self._log_since(child), exit_code=code if not signame else None
        )
        uptime = time.monotonic() - child.started
        delay = child.backoff.next_delay(uptime)
        child.next_start = time.monotonic() + delay
        status.state, status.next_start_at = "waiting", time.time() + delay
        log.warning(
            "%s (pid %s) %s after %.1fs; starting it again in %.0fs%s",
            child.spec.name,
            status.pid,
            describe_exit(code, signame) or "failed",
            uptime,
            delay,
            f": {status.last_error}" if status.last_error else "",
        )

    def _log_since(self, child: _Child) -> str:
        """What the child's latest run wrote, at most its last 64 KiB."""
        try:
            with open(child.status.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(child.log_offset, size - _LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- stopping ---------------------------------------------------------------------------

    def _stop(self, children: Iterable[_Child]) -> None:
        """Stops `children` and forgets them: in stop_order, each tier together (SIGTERM so
        they drain; SIGKILL for what is still running after the timeout)."""
        by_order: dict[int, list[_Child]] = {}
        for child in children:
            by_order.setdefault(child.spec.stop_order, []).append(child)
        for order in sorted(by_order):
            tier = by_order[order]
            running = [c.popen for c in tier if c.popen is not None]
            for popen in running:
                _kill_group(popen.pid, signal.SIGTERM)
            deadline = time.monotonic() + self._stop_timeout_s
            while not all(_has_exited(p) for p in running) and time.monotonic() < deadline:
                time.sleep(0.1)
            for popen in running:
                if not _has_exited(popen):
                    log.warning(
                        "pid %s did not stop in %.0fs; killing", popen.pid, self._stop_timeout_s
                    )
                # Whatever else its process group still holds goes too.
                _kill_group(popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=5)
            for child in tier:
                log.info("stopped %s (pid %s)", child.spec.name, child.status.pid)
                self.children.pop(child.spec.name, None)
            self.publish()

    # -- the state file ---------------------------------------------------------------------

    def publish(self) -> None:
        state = {
            "pid": os.getpid(),
            "children": [asdict(c.status) for c in self.children.values()],
        }
        if state != self._published and self.home.is_dir():
            write_json(self.home / STATE_FILE, state)
            self._published = json.loads(json.dumps(state))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shopvec.supervise", description=__doc__)
    p.add_argument("--home", type=Path, required=True)
    args = p.parse_args(argv)
    from shopvec.logs import configure_logging

    configure_logging("INFO")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping every child", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Supervisor(args.home.resolve()).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
