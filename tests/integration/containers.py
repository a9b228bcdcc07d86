"""The integration tests' other stack: the official Apache Kafka and Milvus standalone images,
started through testcontainers where a Docker engine answers (docs/design.md, "Testing on the
official images").

TEST_STACK=embedded (default) runs on the embedded broker and Milvus Lite; TEST_STACK=containers
on the images, and skips with the reason when no Docker engine answers; TEST_STACK=auto takes
the images when Docker answers, else the embedded stack. TEST_KAFKA_IMAGE and TEST_MILVUS_IMAGE
choose the images.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["ContainerStack", "docker_unavailable", "stack_choice", "start_containers"]

KAFKA_IMAGE = "apache/kafka:4.1.0"
MILVUS_IMAGE = "milvusdb/milvus:v2.6.0"
CHOICES = ("embedded", "containers", "auto")


@dataclass(frozen=True)
class ContainerStack:
    bootstrap_servers: str
    milvus_uri: str


def stack_choice() -> str:
    choice = os.environ.get("TEST_STACK", "embedded").strip().lower() or "embedded"
    if choice not in CHOICES:
        raise ValueError(f"TEST_STACK must be one of {', '.join(CHOICES)}, not {choice!r}")
    return choice


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used from here, or None when one answers its /_ping."""
    try:
        import testcontainers  # noqa: F401
    except ImportError as exc:
        return f"testcontainers is not installed ({exc})"
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    # A plain socket rather than the Docker SDK: the SDK leaves its connection open when the
    # engine is not there, which the test run's warnings-as-errors would report.
    if host.startswith("unix://"):
        family, address = socket.AF_UNIX, host.removeprefix("unix://")
    elif host.startswith("tcp://"):
        name, _, port = host.removeprefix("tcp://").rpartition(":")
        family, address = socket.AF_INET, (name, int(port))
    else:
        return f"DOCKER_HOST={host} is not a unix:// or tcp:// address these tests can check"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(1024)
    except OSError as exc:
        return f"no Docker engine answers at {host} ({exc})"
    if not answer.startswith(b"HTTP/1.") or b" 200 " not in answer.split(b"\r\n", 1)[0]:
        return f"{host} answered /_ping with {answer[:60]!r}"
    return None


def _kafka(host_port: int) -> Any:
    """A single KRaft node of the Apache Kafka image. It advertises the host port Docker maps to
    its listener, so clients outside the container reach it; topics are never created on use,
    as in production, where the workers must not create them either."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    image = os.environ.get("TEST_KAFKA_IMAGE", KAFKA_IMAGE)
    return (
        DockerContainer(image)
        .with_envs(**env)
        .with_bind_ports(9092, host_port)
        .waiting_for(LogMessageWaitStrategy("Kafka Server started"))
    )


def _milvus() -> Any:
    from testcontainers.community.milvus import MilvusContainer

    return MilvusContainer(image=os.environ.get("TEST_MILVUS_IMAGE", MILVUS_IMAGE))


@contextmanager
def start_containers(free_port: Callable[[], int]) -> Iterator[ContainerStack]:
    with ExitStack() as stack:
        kafka_port = free_port()
        stack.enter_context(_kafka(kafka_port))
        milvus = stack.enter_context(_milvus())
        yield ContainerStack(f"127.0.0.1:{kafka_port}", milvus.get_connection_url())
