"""The kustomize trees under k8s/: they render, every object validates offline against the
Kubernetes schemas (KEDA's against the schemas in schemas/), and they hold together: probes on
the workers' endpoints, autoscalers on the right consumer groups, references that resolve."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from pydantic import SecretStr
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shopvec.settings import Settings
from tests.deploy.deploykit import (
    CONSUMES,
    ENCODING_KINDS,
    HTTP_KIND,
    K8S,
    K8S_VERSION,
    SERVICE_KINDS,
    WORKER_KINDS,
    Rendered,
    cpu_cores,
    drain_budget_s,
    image_repository,
    load_settings,
    render,
    schema,
    setting_names,
    worker_module,
)

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.schema.json",
}

EXTERNAL_SECRETS = {"shopvec-kafka-ca"}
"""Secrets the trees reference but do not make: the Kafka cluster CA, copied from the Kafka
operator's namespace (docs/deployment.md)."""

KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


@functools.cache
def _crd_validator(name: str) -> jsonschema.Draft202012Validator:
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{K8S_VERSION}.0-local-strict/_definitions.json", K8S_VERSION
    )
    registry: Registry = Resource(contents=definitions, specification=DRAFT202012) @ Registry()
    contents = schema(name)
    jsonschema.Draft202012Validator.check_schema(contents)
    return jsonschema.Draft202012Validator(contents, registry=registry)


def _worker_container(rendered: Rendered, kind: str) -> dict[str, Any]:
    containers = rendered.deployment(kind)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"the {kind} pod should run one container"
    return containers[0]


def _settings_of(rendered: Rendered, kind: str) -> Settings:
    return load_settings(rendered.container_env(_worker_container(rendered, kind)))


def _autoscalers(rendered: Rendered) -> dict[str, list[dict[str, Any]]]:
    """Deployment name -> the ScaledObjects and HPAs that target it."""
    targets: dict[str, list[dict[str, Any]]] = {}
    for obj in rendered.of_kind("ScaledObject"):
        targets.setdefault(obj["spec"]["scaleTargetRef"]["name"], []).append(obj)
    for obj in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = obj["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        targets.setdefault(ref["name"], []).append(obj)
    return targets


def test_every_object_validates_offline(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    validators = {key: _crd_validator(file) for key, file in CRD_SCHEMAS.items()}
    problems = []
    for obj in rendered.objects:
        key = (obj["apiVersion"], obj["kind"])
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        if key in validators:
            problems += [
                f"{where}: {e.json_path}: {e.message}" for e in validators[key].iter_errors(obj)
            ]
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {key} (a CRD needs one in schemas/)")
    assert not problems, "\n".join(problems)


def test_worker_deployments(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    for kind in WORKER_KINDS:
        deployment = rendered.deployment(kind)
        pod = deployment["spec"]["template"]["spec"]
        container = _worker_container(rendered, kind)
        settings = _settings_of(rendered, kind)
        port = settings.ops.port

        # The image's entrypoint (tini) stays: the worker is given as args.
        assert "command" not in container, f"{name}/{kind}: use args, keep the entrypoint"
        assert worker_module(container["args"]) == kind, f"{name}/{kind}: {container['args']}"
        assert image_repository(container["image"]) == "shopvec"

        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.get("http") == port, f"{name}/{kind}: containerPort vs SHOPVEC_OPS__PORT"
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(port)
        assert annotations.get("prometheus.io/path") == "/metrics"

        probes = {
            probe: container[probe]["httpGet"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["livenessProbe"]["path"] == "/healthz"
        assert probes["startupProbe"]["path"] == "/healthz"
        assert probes["readinessProbe"]["path"] == "/readyz"
        for probe, http in probes.items():
            assert http["port"] in ("http", port), f"{name}/{kind}: {probe} port"

        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}/{kind}"

        drain = drain_budget_s(settings, kind)
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > drain, f"{name}/{kind}: grace {grace}s is not longer than a {drain}s drain"

        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        if container["securityContext"].get("readOnlyRootFilesystem"):
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}/{kind}: a read-only root needs a writable /tmp"

        # torch gets as many threads as the container has CPUs; a query worker's encoder runs
        # on its own setting, never on more threads than that.
        cpus = math.ceil(cpu_cores(container["resources"]["limits"]["cpu"]))
        if kind == "query":
            threads = settings.query.encoder_threads
            assert threads is not None and threads <= cpus, f"{name}/{kind}: torch threads"
        else:
            assert settings.encoder.threads == cpus, f"{name}/{kind}: torch threads vs CPU limit"


def test_disruption_budgets(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    budgets = rendered.of_kind("PodDisruptionBudget")
    for kind in SERVICE_KINDS:
        labels = rendered.deployment(kind)["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, f"{name}: one PodDisruptionBudget should select {kind} pods"
        spec = matching[0]["spec"]
        assert spec.get("maxUnavailable") == 1 or "minAvailable" in spec


def test_topic_job(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    jobs = rendered.of_kind("Job")
    assert len(jobs) == 1, f"{name}: one topic-creation Job"
    pod = jobs[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["shopvec", "topics", "create"]
    assert "command" not in container
    assert image_repository(container["image"]) == "shopvec"
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    worker = _worker_container(rendered, "indexer")
    assert container["envFrom"] == worker["envFrom"], "the Job reads the workers' settings"
    assert container["image"] == worker["image"]


def test_references_resolve(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    for owner, pod in rendered.pod_specs():
        where = f"{name}: {owner['kind']}/{owner['metadata']['name']}"
        assert pod["serviceAccountName"] in rendered.names("ServiceAccount"), where
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in rendered.names("ConfigMap"), where
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in rendered.names("Secret"), where
            volumes = {v["name"] for v in pod.get("volumes", [])}
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mount {mount['name']}"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                secret = volume["secret"]["secretName"]
                assert secret in rendered.names("Secret") | EXTERNAL_SECRETS, f"{where}: {secret}"
            if "configMap" in volume:
                assert volume["configMap"]["name"] in rendered.names("ConfigMap"), where
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in rendered.names("PersistentVolumeClaim"), f"{where}: {claim}"


def test_kafka_tls_material_is_mounted(tree: tuple[str, Rendered]) -> None:
    """Over SSL or SASL_SSL the CA file the settings name is in a mounted Secret."""
    name, rendered = tree
    for kind in SERVICE_KINDS:
        settings = _settings_of(rendered, kind)
        if settings.kafka.security_protocol not in ("SSL", "SASL_SSL"):
            continue
        assert settings.kafka.ssl_ca_location, f"{name}/{kind}: TLS without a CA"
        container = _worker_container(rendered, kind)
        pod = rendered.deployment(kind)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = [
            m
            for m in container["volumeMounts"]
            if settings.kafka.ssl_ca_location.startswith(m["mountPath"].rstrip("/") + "/")
        ]
        assert mounts, f"{name}/{kind}: nothing mounted at {settings.kafka.ssl_ca_location}"
        secret = volumes[mounts[0]["name"]]["secret"]
        assert secret.get("optional") is False, f"{name}/{kind}: the CA must be there to start"


def test_autoscaling(tree: tuple[str, Rendered]) -> None:
    name, rendered = tree
    targets = _autoscalers(rendered)
    deployments = rendered.names("Deployment")
    assert set(targets) <= deployments, f"{name}: an autoscaler targets a missing Deployment"
    for target, scalers in targets.items():
        assert len(scalers) == 1, f"{name}: {target} has both KEDA and an HPA (or two of one)"
    if not targets:
        return  # the base alone: the overlay picks the autoscaler

    for kind in WORKER_KINDS:
        deployment = rendered.deployment(kind)
        scalers = targets.get(deployment["metadata"]["name"], [])
        if kind in ENCODING_KINDS:
            assert scalers, f"{name}: the {kind} worker is not autoscaled"
            assert "replicas" not in deployment["spec"], (
                f"{name}/{kind}: a replicas field fights the autoscaler on every apply"
            )
        else:
            assert not scalers, f"{name}: the {kind} worker is not meant to autoscale"

    for kind in ENCODING_KINDS:
        settings = _settings_of(rendered, kind)
        _, topic_key = CONSUMES[kind]
        partitions = settings.topics.partitions[topic_key]
        (scaler,) = targets[rendered.deployment(kind)["metadata"]["name"]]
        if scaler["kind"] == "HorizontalPodAutoscaler":
            spec = scaler["spec"]
            assert 1 <= spec["minReplicas"] <= spec["maxReplicas"] <= partitions, (
                f"{name}/{kind}: more replicas than {topic_key} partitions ({partitions})"
            )
            assert any(m["resource"]["name"] == "cpu" for m in spec["metrics"])
            continue
        _check_scaled_object(name, rendered, kind, scaler, settings, partitions)


def _check_scaled_object(
    name: str,
    rendered: Rendered,
    kind: str,
    scaled: dict[str, Any],
    settings: Settings,
    partitions: int,
) -> None:
    spec = scaled["spec"]
    section, topic_key = CONSUMES[kind]
    where = f"{name}/{kind}"
    assert spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"] <= partitions, (
        f"{where}: maxReplicaCount beyond the {partitions} partitions of {topic_key}"
    )
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    (trigger,) = [t for t in spec["triggers"] if t["type"] == "kafka"]
    meta = trigger["metadata"]
    env = rendered.container_env(_worker_container(rendered, kind))

    def resolved(parameter: str) -> str:
        if f"{parameter}FromEnv" in meta:
            variable = meta[f"{parameter}FromEnv"]
            assert variable in env, f"{where}: {parameter}FromEnv names {variable}, not set"
            return env[variable]
        return meta[parameter]

    group = getattr(settings, section).group_id
    assert resolved("consumerGroup") == group, f"{where}: consumerGroup is not the worker's group"
    assert group == getattr(Settings(), section).group_id, f"{where}: not the documented group"
    assert resolved("topic") == getattr(settings.topics, topic_key)
    assert resolved("bootstrapServers") == settings.kafka.bootstrap_servers
    # KEDA connects from its own namespace: a short service name would not resolve there.
    for server in resolved("bootstrapServers").split(","):
        assert server.rsplit(":", 1)[0].count(".") >= 2, f"{where}: {server} is not a full name"

    protocol = settings.kafka.security_protocol
    if protocol.startswith("SASL_"):
        assert meta.get("sasl") == KEDA_SASL[settings.kafka.sasl_mechanism or ""], where
        _check_trigger_auth(where, rendered, kind, trigger, {"username", "password"})
    else:
        assert meta.get("sasl", "none") == "none", f"{where}: SASL for a {protocol} cluster"
    if protocol in ("SSL", "SASL_SSL"):
        assert meta.get("tls") == "enable", where
        _check_trigger_auth(where, rendered, kind, trigger, {"ca"})
    else:
        assert meta.get("tls", "disable") == "disable", f"{where}: TLS for a {protocol} cluster"


def _check_trigger_auth(
    where: str, rendered: Rendered, kind: str, trigger: dict[str, Any], needed: set[str]
) -> None:
    ref = trigger.get("authenticationRef")
    assert ref, f"{where}: the trigger needs credentials (authenticationRef)"
    auth = rendered.get(ref.get("kind", "TriggerAuthentication"), ref["name"])
    assert auth is not None, f"{where}: no TriggerAuthentication {ref['name']}"
    container = _worker_container(rendered, kind)
    env = rendered.container_env(container)
    given = set()
    for entry in auth["spec"].get("env", []):
        assert entry.get("containerName", container["name"]) == container["name"], where
        assert entry["name"] in env, f"{where}: {entry['name']} is not in the worker's env"
        given.add(entry["parameter"])
    for entry in auth["spec"].get("secretTargetRef", []):
        if entry["name"] in EXTERNAL_SECRETS:
            given.add(entry["parameter"])
            continue
        assert entry["key"] in rendered.secret_data(entry["name"]), f"{where}: {entry}"
        given.add(entry["parameter"])
    assert needed <= given, f"{where}: KEDA lacks {needed - given}"


def test_prod_runs_encoders_on_gpus(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    for kind in WORKER_KINDS:
        resources = _worker_container(rendered, kind)["resources"]
        gpus = resources["limits"].get("nvidia.com/gpu")
        if name == "prod" and kind in ENCODING_KINDS:
            assert int(gpus) >= 1, f"prod/{kind} has no nvidia.com/gpu limit"
            assert resources["requests"].get("nvidia.com/gpu", gpus) == gpus
        elif kind not in ENCODING_KINDS:
            assert gpus is None, f"{name}/{kind} does not encode: no GPU"


def test_overlay_hosts_are_external_services(overlay: tuple[str, Rendered]) -> None:
    """Kafka and Milvus are outside the tree: addressed by full in-cluster or external names,
    never by a Service of this namespace, and the same for every worker."""
    name, rendered = overlay
    seen = set()
    for kind in WORKER_KINDS:
        settings = _settings_of(rendered, kind)
        assert settings.kafka.bootstrap_servers and settings.milvus.uri, f"{name}/{kind}"
        seen.add((settings.kafka.bootstrap_servers, settings.milvus.uri))
    assert len(seen) == 1, f"{name}: the workers disagree on where Kafka and Milvus are: {seen}"
    services = rendered.names("Service")
    assert services == {"shopvec-http"}, f"Kafka and Milvus are external, not Services: {services}"
    # The JSON settings come through kustomize's env files intact.
    env = rendered.container_env(_worker_container(rendered, "indexer"))
    assert isinstance(json.loads(env["SHOPVEC_TOPICS__PARTITIONS"]), dict)


def test_dev_and_prod_pick_different_autoscalers() -> None:
    """The overlays show both: prod scales on lag with KEDA, dev on CPU with a plain HPA."""
    prod, dev = render(K8S / "overlays" / "prod"), render(K8S / "overlays" / "dev")
    assert prod.of_kind("ScaledObject") and not prod.of_kind("HorizontalPodAutoscaler")
    assert dev.of_kind("HorizontalPodAutoscaler") and not dev.of_kind("ScaledObject")


@pytest.mark.parametrize("kind", WORKER_KINDS)
def test_group_names_are_the_documented_ones(kind: str, overlay: tuple[str, Rendered]) -> None:
    """shopvec-indexer, shopvec-query, shopvec-behaviour: in the code and in the overlays."""
    name, rendered = overlay
    section, _ = CONSUMES[kind]
    assert getattr(Settings(), section).group_id == f"shopvec-{kind}"
    assert getattr(_settings_of(rendered, kind), section).group_id == f"shopvec-{kind}", name


def test_prod_replaces_development_secrets() -> None:
    """A secret with a development default in the code (the pseudonym key) is overridden."""
    rendered = render(K8S / "overlays" / "prod")
    defaults = Settings()
    for kind in WORKER_KINDS:
        settings = _settings_of(rendered, kind)
        for secret_name in [n for n in setting_names().values() if n.secret]:
            ours, default = settings, defaults
            for part in secret_name.path:
                ours, default = getattr(ours, part), getattr(default, part)
            if isinstance(default, SecretStr) and default.get_secret_value():
                assert ours != default, f"prod/{kind}: {secret_name.env} is the development one"


def test_http_deployment_and_service(tree: tuple[str, Rendered]) -> None:
    """The API and page: its own port setting, probes on its endpoints, reachable in the pod,
    and a Service that selects its pods by the port's name."""
    name, rendered = tree
    deployment = rendered.deployment(HTTP_KIND)
    pod = deployment["spec"]["template"]["spec"]
    container = _worker_container(rendered, HTTP_KIND)
    settings = _settings_of(rendered, HTTP_KIND)
    assert worker_module(container["args"]) == HTTP_KIND and "command" not in container
    assert image_repository(container["image"]) == "shopvec"
    assert container["image"] == _worker_container(rendered, "query")["image"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.http.port}, f"{name}: containerPort vs SHOPVEC_HTTP__PORT"
    assert settings.http.host == "0.0.0.0", f"{name}: loopback is unreachable from the Service"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", settings.http.port)
    assert pod["terminationGracePeriodSeconds"] > settings.http.timeout_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    service = rendered.get("Service", "shopvec-http")
    assert service is not None, f"{name}: no Service for the HTTP API"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
