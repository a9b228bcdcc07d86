"""The real broker (Tansu) and the real Milvus Lite server, started once per test run.

Each test gets its own topics and its own collection alias, so tests never see each other's
data. Workers run in threads of the test process with the real offline encoder, loaded once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from shopvec.encoders.offline import OfflineEncoder
from shopvec.kafka.admin import ensure_topics
from shopvec.settings import (
    KafkaSettings,
    MilvusSettings,
    Settings,
    StackSettings,
    TopicSettings,
)
from shopvec.stack import EmbeddedStack, free_port
from tests.integration.containers import docker_unavailable, stack_choice, start_containers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The embedded broker and Milvus Lite, or the official images (tests/integration/
    containers.py: TEST_STACK=containers or auto)."""
    choice = stack_choice()
    if choice != "embedded":
        why_not = docker_unavailable()
        if why_not is None:
            with start_containers(free_port) as images:
                yield Settings(
                    kafka=KafkaSettings(
                        bootstrap_servers=images.bootstrap_servers, session_timeout_ms=6000
                    ),
                    milvus=MilvusSettings(uri=images.milvus_uri),
                    stack=StackSettings(home=tmp_path_factory.mktemp("stack")),
                )
            return
        if choice == "containers":
            pytest.skip(f"TEST_STACK=containers, but {why_not}")
    settings = Settings(
        kafka=KafkaSettings(session_timeout_ms=6000),
        stack=StackSettings(
            home=tmp_path_factory.mktemp("stack"),
            kafka_port=free_port(),
            milvus_port=free_port(),
        ),
    )
    stack = EmbeddedStack(settings)
    stack.up(workers=[])
    yield settings
    stack.down()


@pytest.fixture(scope="session")
def encoder() -> OfflineEncoder:
    enc = OfflineEncoder()
    enc.warm_up()
    return enc


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    """Unique topics and collection per test."""
    tag = uuid.uuid4().hex[:10]
    topics = TopicSettings(
        products=f"products-{tag}",
        user_events=f"user-events-{tag}",
        search_requests=f"search-requests-{tag}",
        search_replies=f"search-replies-{tag}",
        dead_letters=f"dead-letters-{tag}",
        partitions={"products": 2, "search_requests": 2},
    )
    milvus = stack_settings.milvus.model_copy(
        update={"collection": f"products_{tag}", "users_collection": f"users_{tag}"}
    )
    # Groups are per test too: a group whose members follow other topics rebalances slowly.
    groups = {
        name: getattr(stack_settings, name).model_copy(update={"group_id": f"{name}-{tag}"})
        for name in ("indexer", "query", "behaviour")
    }
    s = stack_settings.model_copy(update={"topics": topics, "milvus": milvus, **groups})
    ensure_topics(s)
    return s


@contextmanager
def running(loop: Callable[[threading.Event], None], ready: threading.Event) -> Iterator[None]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        if not ready.wait(30):
            raise TimeoutError(f"worker not assigned partitions in 30s: {errors}")
        yield
    finally:
        stop.set()
        thread.join(30)
        if errors:
            raise errors[0]


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    import time

    def wait(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
            time.sleep(0.2)

    return wait
