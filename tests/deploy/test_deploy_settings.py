"""Every setting the workers read is in the compose env file and in the Kubernetes ConfigMap or
Secret, secrets only in the Secret, and what is written there loads into Settings.

The names come from walking shopvec.settings.Settings: a field added to the model fails here
until the deployment files carry it.
"""

from __future__ import annotations

from schemas.wire import DEFAULT_TOPICS
from tests.deploy.deploykit import (
    COMPOSE_ENV_FILE,
    COMPOSE_FILE,
    SERVICE_KINDS,
    Rendered,
    load_settings,
    load_yaml,
    parse_compose_env_file,
    setting_names,
    settings_prefix,
)


def _unknown(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(settings_prefix())} - set(setting_names())


def test_settings_model_has_leaves() -> None:
    names = setting_names()
    assert "SHOPVEC_KAFKA__BOOTSTRAP_SERVERS" in names
    assert "SHOPVEC_OPS__PORT" in names
    assert names["SHOPVEC_MILVUS__TOKEN"].secret
    assert names["SHOPVEC_KAFKA__SASL_PASSWORD"].secret
    assert not names["SHOPVEC_KAFKA__SASL_USERNAME"].secret
    # dicts and lists are leaves, given as JSON
    assert "SHOPVEC_TOPICS__PARTITIONS" in names and "SHOPVEC_IMAGES__ALLOW_HOSTS" in names


def test_compose_env_file_covers_every_setting() -> None:
    entries = parse_compose_env_file(COMPOSE_ENV_FILE)
    missing = sorted(set(setting_names()) - set(entries))
    assert not missing, f"{COMPOSE_ENV_FILE.name} lacks {missing}"
    unknown = sorted(_unknown(set(entries)))
    assert not unknown, f"{COMPOSE_ENV_FILE.name} sets what no setting reads: {unknown}"


def test_compose_env_file_loads_and_points_at_the_stack() -> None:
    entries = parse_compose_env_file(COMPOSE_ENV_FILE)
    settings = load_settings({k: v for k, v in entries.items() if v is not None})
    services = load_yaml(COMPOSE_FILE)["services"]

    assert settings.kafka.bootstrap_servers is not None, "the workers would start their own Kafka"
    assert settings.milvus.uri is not None, "the workers would start their own Milvus"
    for server in settings.kafka.bootstrap_servers.split(","):
        host, port = server.rsplit(":", 1)
        assert host in services, f"{server}: not a compose service"
        listeners = str(services[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
        assert f"//{host}:{port}" in listeners, f"{server} is not an advertised listener"
    host, _, port = settings.milvus.uri.split("://", 1)[1].partition(":")
    assert host in services and any(str(p).endswith(f":{port}") for p in services[host]["ports"]), (
        f"{settings.milvus.uri}: not the milvus service's port"
    )
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.kafka.sasl_mechanism is None, "unset: the compose broker has no SASL"
    assert (settings.encoder.model_path or "").startswith("/models/"), "weights live under /models"


def test_compose_topic_names_are_the_wire_defaults() -> None:
    """Producers in other languages use the names in schemas/wire.py."""
    entries = parse_compose_env_file(COMPOSE_ENV_FILE)
    settings = load_settings({k: v for k, v in entries.items() if v is not None})
    assert settings.topics.all() == DEFAULT_TOPICS


def test_k8s_topic_names_are_the_wire_defaults(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    for kind in SERVICE_KINDS:
        container = rendered.deployment(kind)["spec"]["template"]["spec"]["containers"][0]
        settings = load_settings(rendered.container_env(container))
        assert settings.topics.all() == DEFAULT_TOPICS, f"{name}/{kind}"


def test_k8s_settings_cover_every_setting(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    for kind in SERVICE_KINDS:
        pod = rendered.deployment(kind)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        configmaps = [
            s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s
        ]
        secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        assert configmaps and secrets, f"{name}/{kind}: settings come from a ConfigMap and a Secret"
        plain: set[str] = set()
        hidden: set[str] = set()
        for configmap in configmaps:
            plain |= set(rendered.configmap_data(configmap))
        for secret in secrets:
            hidden |= set(rendered.secret_data(secret))

        names = setting_names()
        missing = sorted(set(names) - plain - hidden)
        assert not missing, f"{name}/{kind}: neither ConfigMap nor Secret has {missing}"
        exposed = sorted(n for n in plain if n in names and names[n].secret)
        assert not exposed, f"{name}/{kind}: secrets in a ConfigMap: {exposed}"
        misplaced = sorted(n for n in hidden if n in names and not names[n].secret)
        assert not misplaced, f"{name}/{kind}: plain settings in the Secret: {misplaced}"
        unknown = sorted(_unknown(plain | hidden | {e["name"] for e in container.get("env", [])}))
        assert not unknown, f"{name}/{kind}: set but read by no setting: {unknown}"

        # Secrets reach the pod only through the Secret, never as a literal env value.
        for entry in container.get("env", []):
            if entry["name"] in names and names[entry["name"]].secret:
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name}/{kind}: {entry}"


def test_k8s_settings_load(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    for owner, pod in rendered.pod_specs():
        for container in pod["containers"]:
            settings = load_settings(rendered.container_env(container))
            where = f"{name}: {owner['kind']}/{owner['metadata']['name']}"
            assert settings.kafka.bootstrap_servers, f"{where}: would start an embedded Kafka"
            assert settings.milvus.uri, f"{where}: would start an embedded Milvus"
            assert set(settings.topics.partitions) >= set(settings.topics.all()), (
                f"{where}: a topic without a partition count"
            )
