"""The supervisor as a user meets it: a worker killed with SIGKILL comes back by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack, free_port
from shopvec.supervise import ChildStatus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "shopvec.cli"]


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _ready(port: int | None) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_a_killed_worker_is_started_again_and_down_stops_everything(
    tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    home, kafka_port, milvus_port = tmp_path / "stack", free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPVEC_")}
    env.update(
        {
            "SHOPVEC_STACK__HOME": str(home),
            "SHOPVEC_STACK__KAFKA_PORT": str(kafka_port),
            "SHOPVEC_STACK__MILVUS_PORT": str(milvus_port),
            # A killed consumer's partitions go to its successor once its session expires.
            "SHOPVEC_KAFKA__SESSION_TIMEOUT_MS": "6000",
        }
    )

    def cli(*args: str) -> str:
        done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        return done.stdout

    settings = Settings.model_validate(
        {"stack": {"home": home, "kafka_port": kafka_port, "milvus_port": milvus_port}}
    )
    stack = EmbeddedStack(settings)

    def query() -> ChildStatus:
        return next(c for c in stack.supervised() if c.name == "query")

    cli("up", "--workers", "query")
    seen = stack.processes()
    try:
        assert {p.name for p in seen} == {"kafka", "supervisor", "milvus", "query"}
        first = query()
        assert first.restarts == 0 and first.alive() and _ready(first.port)

        os.kill(first.pid or 0, signal.SIGKILL)

        def restarted() -> ChildStatus | None:
            child = query()
            again = child.restarts >= 1 and child.pid != first.pid and child.alive()
            return child if again and _ready(child.port) else None

        second = wait_for(restarted, 60, "the killed query worker to answer /readyz again")
        assert second.port == first.port
        assert second.last_exit_signal == "SIGKILL"
        seen += stack.processes()

        status = cli("status")
        line = next(n for n in status.splitlines() if n.startswith("query"))
        assert f"pid {second.pid} " in line and "running" in line and "restarts 1" in line
        assert f"http://127.0.0.1:{second.port}/" in line
        assert "last exit: killed by SIGKILL" in status

        # A second `up` starts nothing that runs already.
        stack.up(workers=["query"])
        assert query().pid == second.pid and query().restarts == 1
    finally:
        stopped = cli("down")
    assert "query" in stopped and "supervisor" in stopped
    for proc in seen:
        assert not proc.alive(), f"{proc.name} (pid {proc.pid}) still running"
        assert _group_members(proc.pid) == [], f"{proc.name}'s process group still has members"
    assert stack.processes() == [] and stack.supervised() == []
