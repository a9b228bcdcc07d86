"""`shopvec up` and `shopvec down` as a user runs them: real processes, stopped by pid."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.client import SearchClient
from shopvec.publish import EventPublisher
from shopvec.settings import Settings
from shopvec.stack import EmbeddedStack
from tests.integration.cli_stack import CliStack, group_members

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_up_serves_searches_and_down_leaves_nothing_running(tmp_path: Path, wait_for) -> None:
    shell = CliStack.at(tmp_path / "stack")
    shell.run("up")
    settings = shell.settings
    procs = EmbeddedStack(settings).processes()
    assert {p.name for p in procs} == {
        "kafka",
        "supervisor",
        "milvus",
        "indexer",
        "query",
        "behaviour",
        "http",
        "kafka-compat",
    }
    page = f"http://127.0.0.1:{settings.http.port}/"
    try:
        status = shell.run("status")
        assert page in status
        # Older Kafka clients (kcat 1.7.1) have a listener of their own.
        compat = settings.stack.kafka_compat_port
        assert f"kcat -b 127.0.0.1:{compat}" in status
        # The query worker made the requests topic's standby generation when it started.
        requests = settings.topics.search_requests
        assert f"search requests go to {requests} (standby {requests}.g1; 2 generations)" in status
        meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{compat}"}).list_topics(timeout=10)
        assert settings.topics.products in meta.topics
        products = myntra_products(DEMO_CATALOG)
        batch = [next(products) for _ in range(5)]
        EventPublisher(settings).send_all(batch, progress=False)
        with SearchClient(settings, timeout_s=20) as client:

            def found() -> bool:
                reply = client.search(batch[2].title, top_k=1)
                return bool(reply.results) and reply.results[0].product_id == batch[2].id

            wait_for(found, 60, "the product through the stack's own workers")
        # The same search over HTTP, as `curl -s -X POST PAGE/v1/search -d '{...}'` sends it.
        request = urllib.request.Request(
            f"{page}v1/search", data=json.dumps({"text": batch[2].title}).encode()
        )
        with urllib.request.urlopen(request, timeout=20) as answer:
            results = json.load(answer)["results"]
        assert results[0]["product_id"] == batch[2].id and results[0]["thumbnail"]
        with urllib.request.urlopen(page, timeout=5) as answer:
            assert b"<form" in answer.read()
    finally:
        shell.run("down", timeout_s=120)
    for proc in procs:
        assert not proc.alive(), f"{proc.name} (pid {proc.pid}) still running"
        assert group_members(proc.pid) == [], f"{proc.name}'s process group still has members"
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
