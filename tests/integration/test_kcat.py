"""kcat, the Kafka command line most operators reach for first, against the embedded broker
through the compatibility listener (`python -m shopvec.kafka.compat`, docs/kafka-clients.md).

Debian 12's kcat 1.7.1 is built on librdkafka 2.0.2, whose ApiVersions parser fails on the
broker's own answer ("Read underflow"); through the listener it lists, produces and consumes.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from shopvec.kafka.admin import create_topic
from shopvec.stack import free_port

pytestmark = pytest.mark.integration

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
needs_kcat = pytest.mark.skipif(
    KCAT is None,
    reason="kcat is not installed (Debian: apt-get install kcat; ./dev test installs it as root)",
)


def _kcat(*args: str, stdin: str | None = None, timeout_s: float = 30) -> str:
    assert KCAT is not None
    done = subprocess.run(
        [KCAT, *args], input=stdin, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def listener(settings) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shopvec.kafka.compat",
            "--broker",
            settings.kafka_bootstrap(),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
                    raise RuntimeError(f"the listener did not start: {said}") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@needs_kcat
def test_kcat_lists_produces_and_consumes_through_the_listener(settings, listener) -> None:
    topic = f"kcat-{uuid.uuid4().hex[:8]}"
    assert create_topic(settings, topic, 2)

    listing = json.loads(_kcat("-b", listener, "-L", "-J"))
    assert [b["name"] for b in listing["brokers"]] == [listener]
    assert {t["topic"]: len(t["partitions"]) for t in listing["topics"]}[topic] == 2

    lines = "\n".join(f"p-{i}:hello {i}" for i in range(5)) + "\n"
    _kcat("-b", listener, "-P", "-t", topic, "-K", ":", "-H", "origin=kcat", stdin=lines)
    out = _kcat("-b", listener, "-C", "-t", topic, "-e", "-o", "beginning", "-J")
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert sorted(r["payload"] for r in records) == [f"hello {i}" for i in range(5)]
    assert all(r["headers"] == ["origin", "kcat"] for r in records)

    # A consumer group: FindCoordinator, JoinGroup, SyncGroup, OffsetCommit go through as well.
    group = f"kcat-group-{uuid.uuid4().hex[:8]}"
    out = _kcat("-b", listener, "-G", group, "-X", "auto.offset.reset=earliest", "-e", "-J", topic)
    assert len([line for line in out.splitlines() if line.startswith("{")]) == 5


@needs_kcat
def test_kcat_without_the_listener_fails_as_documented(settings) -> None:
    """The reason the listener exists. Should a later broker or kcat fix it, this says so."""
    assert KCAT is not None
    if not settings.kafka_embedded:
        pytest.skip("the broker under test is not the embedded one (TEST_STACK)")
    version = subprocess.run([KCAT, "-V"], capture_output=True, text=True).stdout
    if "librdkafka 2.0.2 " not in version:
        pytest.skip(f"this kcat is not the one the documentation measured: {version.strip()}")
    done = subprocess.run(
        [KCAT, "-b", settings.kafka_bootstrap(), "-L", "-m", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "Read underflow" in done.stderr
