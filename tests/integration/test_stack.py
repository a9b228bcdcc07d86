"""`shopvec up` and `shopvec down` as a user runs them: real processes, stopped by pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.client import SearchClient
from shopvec.publish import EventPublisher
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


def test_up_serves_searches_and_down_leaves_nothing_running(tmp_path: Path, wait_for) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPVEC_")}
    env.update(
        {
            "SHOPVEC_STACK__HOME": str(tmp_path / "stack"),
            "SHOPVEC_STACK__KAFKA_PORT": str(free_port()),
            "SHOPVEC_STACK__MILVUS_PORT": str(free_port()),
            "SHOPVEC_KAFKA__SESSION_TIMEOUT_MS": "6000",
        }
    )
    cli = [sys.executable, "-m", "shopvec.cli"]
    up = subprocess.run([*cli, "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    settings = Settings.model_validate(
        {
            "stack": {
                "home": env["SHOPVEC_STACK__HOME"],
                "kafka_port": env["SHOPVEC_STACK__KAFKA_PORT"],
                "milvus_port": env["SHOPVEC_STACK__MILVUS_PORT"],
            }
        }
    )
    procs = EmbeddedStack(settings).processes()
    assert {p.name for p in procs} == {
        "kafka",
        "supervisor",
        "milvus",
        "indexer",
        "query",
        "behaviour",
    }
    try:
        products = myntra_products(DEMO_CATALOG)
        batch = [next(products) for _ in range(5)]
        EventPublisher(settings).send_all(batch, progress=False)
        with SearchClient(settings, timeout_s=20) as client:

            def found() -> bool:
                reply = client.search(batch[2].title, top_k=1)
                return bool(reply.results) and reply.results[0].product_id == batch[2].id

            wait_for(found, 60, "the product through the stack's own workers")
    finally:
        down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for proc in procs:
        assert not proc.alive(), f"{proc.name} (pid {proc.pid}) still running"
        assert _group_members(proc.pid) == [], f"{proc.name}'s process group still has members"
    assert EmbeddedStack(settings).processes() == []


def test_a_worker_follows_settings_changed_in_code_and_stops_alone(settings: Settings) -> None:
    """Topics, collection and group set in code (not in the environment) reach the worker
    process; stopping it leaves the broker, the supervisor and Milvus running, and the
    supervisor does not start it again."""
    stack = EmbeddedStack(settings)
    stack.up(workers=["query"])
    try:
        worker = next(p for p in stack.processes() if p.name == "query")
        with SearchClient(settings, timeout_s=30) as client:
            reply = client.search("blue shirt")
        assert reply.error is None and reply.results == []
    finally:
        assert stack.stop(["query"]) == ["query"]
    assert not worker.alive()
    assert {p.name for p in stack.processes()} == {"kafka", "supervisor", "milvus"}
    assert all(p.alive() for p in stack.processes())
