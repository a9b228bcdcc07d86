"""The supervisor as a user meets it: a worker killed with SIGKILL comes back by itself."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shopvec.stack import EmbeddedStack, ready
from shopvec.supervise import ChildStatus
from tests.integration.cli_stack import CliStack, group_members

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_killed_worker_is_started_again_and_down_stops_everything(
    tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    home = tmp_path / "stack"
    shell = CliStack.at(home)
    cli, settings = shell.run, shell.settings
    stack = EmbeddedStack(settings)

    def query() -> ChildStatus:
        return next(c for c in stack.supervised() if c.name == "query")

    cli("up", "--workers", "query")
    seen = stack.processes()
    try:
        assert {p.name for p in seen} == {"kafka", "supervisor", "milvus", "kafka-compat", "query"}
        first = query()
        assert first.restarts == 0 and first.alive() and ready(first.port)

        os.kill(first.pid or 0, signal.SIGKILL)

        def restarted() -> ChildStatus | None:
            child = query()
            again = child.restarts >= 1 and child.pid != first.pid and child.alive()
            return child if again and ready(child.port) else None

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
        assert group_members(proc.pid) == [], f"{proc.name}'s process group still has members"
    assert stack.processes() == [] and stack.supervised() == []
