"""Readers for the deployment files, shared by the tests in this folder.

The names of the settings come from the model (shopvec.settings.Settings), never from a list
kept here, so a field added to the model is a field the deployment files must carry.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import re
import shutil
import subprocess
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from pydantic import BaseModel, SecretBytes, SecretStr

from shopvec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
GPU_COMPOSE_FILE = ROOT / "deploy" / "compose.gpu.yml"
COMPOSE_ENV_FILE = ROOT / "deploy" / "shopvec.env"
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
DOCS = ROOT / "docs" / "deployment.md"

K8S_VERSION = "1.32"
"""The Kubernetes version the manifests are validated against (kubernetes-validate's schemas)."""

WORKER_KINDS = ("indexer", "query", "behaviour")
HTTP_KIND = "http"
"""The HTTP API and page (workers.http): it consumes no topic and answers on SHOPVEC_HTTP__PORT."""
SERVICE_KINDS = (*WORKER_KINDS, HTTP_KIND)
ENCODING_KINDS = ("indexer", "query")
"""The workers that encode, scale on consumer lag and get a GPU in prod."""

CONSUMES = {
    "indexer": ("indexer", "products"),
    "query": ("query", "search_requests"),
    "behaviour": ("behaviour", "user_events"),
}
"""Worker kind -> (its settings section with group_id, the key of the topic it consumes)."""

WORKER_COMMAND = re.compile(r"^workers\.([a-z_]+)$")


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingName:
    env: str
    path: tuple[str, ...]
    secret: bool


def _unwrap(annotation: Any) -> list[Any]:
    """The members of a union (X | None, Optional[X]) or of Annotated[X, ...]; else [X]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members: list[Any] = []
        for arg in typing.get_args(annotation):
            members.extend(_unwrap(arg))
        return members
    return [annotation]


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    members = [m for m in _unwrap(annotation) if m is not type(None)]
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def _is_secret(annotation: Any) -> bool:
    """SecretStr, or anything that holds one: SecretStr | None, list[SecretStr], ..."""
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


@functools.cache
def setting_names() -> dict[str, SettingName]:
    """Every leaf of the settings model as its environment variable, SHOPVEC_<SECTION>__<FIELD>."""
    config = Settings.model_config
    prefix = (config.get("env_prefix") or "").upper()
    delimiter = config.get("env_nested_delimiter") or "__"
    names: dict[str, SettingName] = {}

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for field_name, field in model.model_fields.items():
            sub = _nested_model(field.annotation)
            if sub is not None:
                walk(sub, (*path, field_name))
                continue
            env = prefix + delimiter.join((*path, field_name)).upper()
            names[env] = SettingName(env, (*path, field_name), _is_secret(field.annotation))

    walk(Settings, ())
    return names


def settings_prefix() -> str:
    return (Settings.model_config.get("env_prefix") or "").upper()


def load_settings(env: Mapping[str, str]) -> Settings:
    """Settings as a worker started with exactly this environment would read them."""
    with mock.patch.dict(os.environ, dict(env), clear=True):
        return Settings()


def indexer_pipeline_depth(settings: Settings) -> int:
    """How many batches the indexer keeps in flight."""
    try:
        from shopvec.indexing.service import max_in_flight

        return max_in_flight(settings.indexer.encode_threads)
    except ImportError:
        return 1


def drain_budget_s(settings: Settings, kind: str) -> float:
    """How long a worker may take to stop after SIGTERM.

    A setting that names it (a field with "drain", "shutdown" or "grace" in its name, in
    seconds) wins. Otherwise: each batch in flight (the indexer keeps several) bounded by its
    image fetches and its Milvus write, then the commit and the group leave.
    """
    explicit = []
    for name in setting_names().values():
        leaf = name.path[-1]
        if leaf.endswith("_s") and any(w in leaf for w in ("drain", "shutdown", "grace")):
            value: Any = settings
            for part in name.path:
                value = getattr(value, part)
            if value is not None:
                explicit.append(float(value))
    if explicit:
        return max(explicit)
    batches = indexer_pipeline_depth(settings) if kind == "indexer" else 1
    per_batch = settings.images.timeout_s + settings.milvus.timeout_s
    return batches * per_batch + settings.kafka.session_timeout_ms / 1000


def parse_duration_s(text: str) -> float:
    """A compose duration such as 1m30s or 60s."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# --- the compose env file -----------------------------------------------------------------


def parse_compose_env_file(path: Path) -> dict[str, str | None]:
    """The compose env-file format: NAME=value, quotes stripped, '#' starts a comment in an
    unquoted value; a bare NAME is present but unset (None) unless the shell exports it."""
    entries: dict[str, str | None] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        if "=" not in line:
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", line), f"{path}:{number}: {raw!r}"
            entries[line] = None
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key), f"{path}:{number}: bad name {key!r}"
        assert key not in entries, f"{path}:{number}: {key} appears twice"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split("#", 1)[0].rstrip()
        entries[key] = value
    return entries


# --- compose ------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open() as handle:
        return yaml.safe_load(handle)


def image_repository(image: str) -> str:
    """registry.example.com/shopvec:0.1.0 -> shopvec."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def image_tag(image: str) -> str | None:
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def worker_module(command: list[str]) -> str | None:
    """["python", "-m", "workers.query"] -> "query"."""
    if len(command) == 3 and command[0] in ("python", "python3") and command[1] == "-m":
        match = WORKER_COMMAND.match(command[2])
        if match:
            return match.group(1)
    return None


# --- Kubernetes ---------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed, so the kustomize trees cannot be rendered")
    return path


@functools.cache
def _render_text(path: str) -> str:
    proc = subprocess.run(
        [kubectl(), "kustomize", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return proc.stdout


def render(path: Path) -> Rendered:
    return Rendered([doc for doc in yaml.safe_load_all(_render_text(str(path))) if doc])


class Rendered:
    """The objects of one kustomize build, with the look-ups the tests need."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}

    def deployment(self, kind: str) -> dict[str, Any]:
        found = [
            d
            for d in self.of_kind("Deployment")
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
            == kind
        ]
        assert len(found) == 1, f"expected one Deployment for the {kind} worker, got {found}"
        return found[0]

    def configmap_data(self, name: str) -> dict[str, str]:
        obj = self.get("ConfigMap", name)
        assert obj is not None, f"no ConfigMap {name}"
        return dict(obj.get("data") or {})

    def secret_data(self, name: str) -> dict[str, str]:
        obj = self.get("Secret", name)
        assert obj is not None, f"no Secret {name}"
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        data.update(obj.get("stringData") or {})
        return data

    def pod_specs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(owner, pod spec) for every Deployment and Job."""
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "Job"):
                yield obj, obj["spec"]["template"]["spec"]

    def container_env(self, container: dict[str, Any]) -> dict[str, str]:
        """The environment a container starts with: envFrom in order, then env."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.configmap_data(source["configMapRef"]["name"]))
            if "secretRef" in source:
                env.update(self.secret_data(source["secretRef"]["name"]))
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
                continue
            ref = entry["valueFrom"]
            if "resourceFieldRef" in ref:
                env[entry["name"]] = resource_field(container, ref["resourceFieldRef"])
            elif "configMapKeyRef" in ref:
                key = ref["configMapKeyRef"]
                env[entry["name"]] = self.configmap_data(key["name"])[key["key"]]
            elif "secretKeyRef" in ref:
                key = ref["secretKeyRef"]
                env[entry["name"]] = self.secret_data(key["name"])[key["key"]]
            else:
                raise AssertionError(f"unexpected env source {entry}")
        return env


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def resource_field(container: dict[str, Any], ref: dict[str, Any]) -> str:
    """The value the downward API gives for a resourceFieldRef (CPU rounded up, as it does)."""
    assert ref.get("containerName", container["name"]) == container["name"]
    section, resource = ref["resource"].split(".", 1)
    value = container["resources"][section][resource]
    assert resource == "cpu", f"only CPU is read through resourceFieldRef here, not {resource}"
    return str(math.ceil(cpu_cores(value) / cpu_cores(ref.get("divisor", "1"))))


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


# --- Dockerfile ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with their continuation lines joined; comment lines dropped."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1])
            continue
        buffer.append(stripped)
        text = " ".join(part.strip() for part in buffer if part.strip())
        buffer = []
        keyword, _, value = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
    assert not buffer, "the Dockerfile ends inside a continued instruction"
    return instructions


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """[global instructions, stage 1, stage 2, ...]; each stage starts with its FROM."""
    stages: list[list[Instruction]] = [[]]
    for instruction in dockerfile_instructions(path):
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for instruction in instructions:
        if instruction.keyword == "ARG":
            name, _, default = instruction.value.partition("=")
            defaults[name.strip()] = default.strip()
    return defaults


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def expand_args(text: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), ""), text)


def copy_sources(instruction: Instruction, args: Mapping[str, str]) -> list[str] | None:
    """The build-context paths a COPY reads, or None for COPY --from=<stage>."""
    parts = instruction.value.split()
    flags = [p for p in parts if p.startswith("--")]
    if any(flag.startswith("--from=") for flag in flags):
        return None
    operands = [expand_args(p, args) for p in parts if not p.startswith("--")]
    return [source.rstrip("/") or "." for source in operands[:-1]]


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether docker leaves `path` out of the build context: the last pattern that matches the
    path or one of its parent folders decides, '!' re-includes (moby's patternmatcher)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = os.path.normpath(pattern[1:] if negate else pattern).strip("/")
        regex = _glob_regex(body)
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded
