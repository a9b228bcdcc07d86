"""docker-compose.yml (and the GPU override): valid against the compose structure, and a stack
that starts in order: KRaft Kafka, Milvus on etcd and MinIO, topics, then the workers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy.deploykit import (
    COMPOSE_ENV_FILE,
    COMPOSE_FILE,
    GPU_COMPOSE_FILE,
    HTTP_KIND,
    ROOT,
    SERVICE_KINDS,
    drain_budget_s,
    image_repository,
    image_tag,
    load_settings,
    load_yaml,
    parse_compose_env_file,
    parse_duration_s,
    schema,
    worker_module,
)

THIRD_PARTY = {
    "kafka": "apache/kafka",
    "etcd": "quay.io/coreos/etcd",
    "minio": "minio/minio",
    "milvus": "milvusdb/milvus",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _settings() -> Any:
    entries = parse_compose_env_file(COMPOSE_ENV_FILE)
    return load_settings({k: v for k, v in entries.items() if v is not None})


def _shopvec_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if image_repository(s.get("image", "")) == "shopvec"}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else command


def _workers(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Worker kind -> the service that runs it."""
    found: dict[str, str] = {}
    for name, service in services.items():
        kind = worker_module(_command(service))
        if kind:
            assert kind not in found, f"{kind} runs in {found[kind]} and {name}"
            found[kind] = name
    return found


def _container_port(mapping: str | int) -> int:
    return int(str(mapping).rsplit(":", 1)[-1].split("/")[0])


def _host_port(mapping: str | int) -> int:
    parts = str(mapping).split(":")
    assert len(parts) >= 2, f"{mapping}: publish explicitly (host:container)"
    return int(parts[-2])


@pytest.mark.parametrize("path", [COMPOSE_FILE, GPU_COMPOSE_FILE], ids=lambda p: p.name)
def test_compose_files_match_the_compose_structure(path: Path) -> None:
    contents = schema("compose-subset.schema.json")
    jsonschema.Draft7Validator.check_schema(contents)
    errors = sorted(
        jsonschema.Draft7Validator(contents).iter_errors(load_yaml(path)), key=lambda e: e.path
    )
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_services(services: dict[str, dict[str, Any]]) -> None:
    for name, repository in THIRD_PARTY.items():
        image = services[name]["image"]
        assert image.rsplit(":", 1)[0] == repository, f"{name}: {image}"
        assert image_tag(image) not in (None, "latest"), f"{name}: pin a version, not {image}"
    assert not [n for n, s in services.items() if "zookeeper" in s.get("image", "")]
    workers = _workers(services)
    assert set(workers) == set(SERVICE_KINDS), f"one service per worker: {workers}"
    assert _command(services["topics"]) == ["shopvec", "topics", "create"]


def test_kafka_runs_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    env = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert env.get("CLUSTER_ID")
    data = [v for v in services["kafka"]["volumes"] if str(v).endswith(":" + env["KAFKA_LOG_DIRS"])]
    assert data, "the log directory is on the named volume"
    max_message = int(env["KAFKA_MESSAGE_MAX_BYTES"])
    assert max_message >= int(_settings().kafka.extra.get("message.max.bytes", "1048588"))


def test_milvus_uses_its_etcd_and_minio(services: dict[str, dict[str, Any]]) -> None:
    env = services["milvus"]["environment"]
    assert env["ETCD_ENDPOINTS"].split(":")[0] == "etcd"
    assert env["MINIO_ADDRESS"].split(":")[0] == "minio"
    assert _command(services["milvus"]) == ["milvus", "run", "standalone"]


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on a missing {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart", "no") == "no", dependency
    expected = {
        "kafka": "service_healthy",
        "milvus": "service_healthy",
        "topics": "service_completed_successfully",
    }
    for name in _workers(services).values():
        conditions = {d: r["condition"] for d, r in services[name]["depends_on"].items()}
        assert conditions == expected, f"{name}: {conditions}"
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert {d for d in services["milvus"]["depends_on"]} == {"etcd", "minio"}
    for name in (*THIRD_PARTY, *_workers(services).values()):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_named_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":", 1)[0]
                if not source.startswith((".", "/", "$", "~")):
                    assert source in declared, f"{name}: volume {source} is not declared"
                    used.add(source)
            elif volume["type"] == "volume":
                assert volume["source"] in declared
                used.add(volume["source"])
    assert used == declared, f"declared but unused: {declared - used}"
    for name in THIRD_PARTY:
        assert services[name].get("volumes"), f"{name} keeps its data on a named volume"


def test_shopvec_services_share_image_and_settings(services: dict[str, dict[str, Any]]) -> None:
    ours = _shopvec_services(services)
    assert {"topics", "indexer", "query", "behaviour", "http"} <= set(ours)
    images = {s["image"] for s in ours.values()}
    assert len(images) == 1, f"one image for every shopvec service: {images}"
    for name, service in ours.items():
        env_files = service["env_file"]
        env_files = [env_files] if isinstance(env_files, str) else env_files
        assert [ROOT / f for f in env_files] == [COMPOSE_ENV_FILE], name
        assert "environment" not in service, f"{name}: settings belong in the env file"
        assert "entrypoint" not in service, f"{name}: keep the image's entrypoint (tini)"
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"


def test_worker_ports_and_health(services: dict[str, dict[str, Any]]) -> None:
    settings = _settings()
    published = []
    for kind, name in _workers(services).items():
        service = services[name]
        port = settings.http.port if kind == HTTP_KIND else settings.ops.port
        assert [_container_port(p) for p in service["ports"]] == [port], name
        published += [_host_port(p) for p in service["ports"]]
        test = " ".join(service["healthcheck"]["test"])
        match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\w+)", test)
        assert match, f"{name}: the healthcheck asks the worker's HTTP endpoint"
        assert int(match.group(1)) == port and match.group(2) in ("/readyz", "/healthz"), name
        grace = parse_duration_s(service["stop_grace_period"])
        # The HTTP service drains its searches in flight, each waiting at most its timeout.
        drain = settings.http.timeout_s if kind == HTTP_KIND else drain_budget_s(settings, kind)
        assert grace > drain, f"{name}: stop_grace_period {grace}s, drain up to {drain}s"
        assert service.get("read_only") is True and "/tmp" in service["tmpfs"], name
    assert len(published) == len(set(published)), "host ports collide"
    for mapping in (p for s in services.values() for p in s.get("ports", [])):
        assert str(mapping).startswith("127.0.0.1:"), f"{mapping}: publish on loopback only"


def test_gpu_override(services: dict[str, dict[str, Any]]) -> None:
    override = load_yaml(GPU_COMPOSE_FILE)["services"]
    assert set(override) == {"indexer", "query"}
    for name, service in override.items():
        assert name in services
        assert service["build"]["args"]["TORCH_VARIANT"] == "cuda"
        assert image_repository(service["image"]) == "shopvec"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_http_service_listens_beyond_its_container(services: dict[str, dict[str, Any]]) -> None:
    """Loopback inside the container would publish nothing: the env file opens it there, and
    the port is published on the host's loopback only."""
    settings = _settings()
    assert settings.http.host == "0.0.0.0"
    (mapping,) = services["http"]["ports"]
    assert mapping == f"127.0.0.1:{settings.http.port}:{settings.http.port}"
