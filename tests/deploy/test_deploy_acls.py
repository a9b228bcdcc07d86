"""k8s/kafka-acls/ and docs/security.md: the Strimzi KafkaUsers render and validate, grant
exactly what the page's kafka-acls.sh commands grant, name the topics and groups of the code,
and give each principal what its job needs and no more."""

from __future__ import annotations

import functools
import re
import shlex
import uuid
from typing import Any

import jsonschema
import pytest

from shopvec.kafka.positions import positions_group
from shopvec.settings import Settings
from tests.deploy.deploykit import CONSUMES, K8S, ROOT, WORKER_KINDS, Rendered, render

ACLS = K8S / "kafka-acls"
SECURITY_DOC = ROOT / "docs" / "security.md"

PRINCIPALS = {
    "catalog": "shopvec-catalog",
    "tracker": "shopvec-tracker",
    "search-client": "shopvec-search-client",
    "indexer": "shopvec-indexer",
    "query": "shopvec-query",
    "behaviour": "shopvec-behaviour",
    "operator": "shopvec-operator",
}

OPERATIONS = [
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "DescribeConfigs",
    "AlterConfigs",
    "IdempotentWrite",
    "All",
]
# Kafka: Read, Write, Delete and Alter on a resource allow Describe of it too.
IMPLIES_DESCRIBE = {"Read", "Write", "Delete", "Alter", "All"}
CHANGES = {"Create", "Delete", "Alter", "AlterConfigs", "ClusterAction", "All"}

KAFKA_USER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "description": "The part of Strimzi's KafkaUser (v1beta2) these files use.",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaUser"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {
                    "type": "object",
                    "required": ["strimzi.io/cluster"],
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "spec": {
            "type": "object",
            "required": ["authentication", "authorization"],
            "additionalProperties": False,
            "properties": {
                "authentication": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {"type": {"enum": ["scram-sha-512", "tls"]}},
                },
                "authorization": {
                    "type": "object",
                    "required": ["type", "acls"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "simple"},
                        "acls": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/acl"}},
                    },
                },
                "quotas": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "producerByteRate": {"type": "integer", "minimum": 0},
                        "consumerByteRate": {"type": "integer", "minimum": 0},
                        "requestPercentage": {"type": "integer", "minimum": 0},
                        "controllerMutationRate": {"type": "number", "minimum": 0},
                    },
                },
            },
        },
    },
    "$defs": {
        "acl": {
            "type": "object",
            "required": ["resource", "operations"],
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["allow", "deny"]},
                "host": {"type": "string"},
                "operations": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": OPERATIONS},
                },
                "resource": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                        "name": {"type": "string", "minLength": 1},
                        "patternType": {"enum": ["literal", "prefix"]},
                    },
                },
            },
        }
    },
}

Grant = tuple[str, str, str, str, str]
"""(user, resource type, resource name, literal | prefixed, operation), as kafka-acls.sh says."""


@functools.cache
def _rendered() -> Rendered:
    return render(ACLS)


def _users() -> dict[str, dict[str, Any]]:
    return {u["metadata"]["name"]: u for u in _rendered().of_kind("KafkaUser")}


def _yaml_grants() -> set[Grant]:
    grants = set()
    for name, user in _users().items():
        for acl in user["spec"]["authorization"]["acls"]:
            assert acl.get("type", "allow") == "allow", f"{name}: deny rules are not used here"
            assert acl.get("host", "*") == "*", f"{name}: rules hold for any host"
            resource = acl["resource"]
            kind = resource["type"]
            pattern = "prefixed" if resource.get("patternType") == "prefix" else "literal"
            target = "kafka-cluster" if kind == "cluster" else resource["name"]
            grants |= {(name, kind, target, pattern, op) for op in acl["operations"]}
    return grants


def _doc_grants() -> set[Grant]:
    grants = set()
    for line in SECURITY_DOC.read_text().splitlines():
        if not line.startswith("$K --add "):
            continue
        words = shlex.split(line)[1:]
        values: dict[str, list[str]] = {}
        flags = set()
        i = 0
        while i < len(words):
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                values.setdefault(words[i], []).append(words[i + 1])
                i += 2
            else:
                flags.add(words[i])
                i += 1
        (principal,) = values["--allow-principal"]
        assert principal.startswith("User:"), line
        resources = [(k, v) for k in ("topic", "group") for v in values.get(f"--{k}", [])]
        if "--cluster" in flags:
            resources.append(("cluster", "kafka-cluster"))
        assert len(resources) == 1, f"one resource per command: {line}"
        kind, target = resources[0]
        pattern = values.get("--resource-pattern-type", ["literal"])[0]
        for op in values["--operation"]:
            grants.add((principal.removeprefix("User:"), kind, target, pattern, op))
    assert grants, "docs/security.md lists no kafka-acls.sh commands"
    return grants


def _allowed(user: str, op: str, kind: str, name: str) -> bool:
    """Whether Kafka's simple authorizer lets user do op on the named resource."""
    for who, rkind, target, pattern, granted in _yaml_grants():
        if who != user or rkind != kind:
            continue
        matches = name == target if pattern == "literal" else name.startswith(target)
        if matches and (
            granted in (op, "All") or (op == "Describe" and granted in IMPLIES_DESCRIBE)
        ):
            return True
    return False


def _private_reply_topic(topics: Any) -> str:
    # As SearchClient names it.
    return f"{topics.search_replies}.{uuid.uuid4().hex}"


def test_kustomization_lists_every_file() -> None:
    files = {p.name for p in ACLS.glob("*.yaml")} - {"kustomization.yaml"}
    kustomization = (ACLS / "kustomization.yaml").read_text()
    listed = set(re.findall(r"^\s+-\s+(\S+\.yaml)\s*$", kustomization, flags=re.MULTILINE))
    assert listed == files


def test_users_render_and_validate() -> None:
    validator = jsonschema.Draft202012Validator(KAFKA_USER_SCHEMA)
    problems = []
    for obj in _rendered().objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        problems += [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
    assert not problems, "\n".join(problems)
    assert {o["kind"] for o in _rendered().objects} == {"KafkaUser"}
    assert set(_users()) == set(PRINCIPALS.values())
    clusters = {u["metadata"]["labels"]["strimzi.io/cluster"] for u in _users().values()}
    namespaces = {u["metadata"]["namespace"] for u in _users().values()}
    assert clusters == {"shopvec"} and namespaces == {"kafka"}, "docs/deployment.md's cluster"


def test_docs_commands_grant_what_the_users_grant() -> None:
    yaml_grants, doc_grants = _yaml_grants(), _doc_grants()
    assert yaml_grants - doc_grants == set(), "in k8s/kafka-acls, not in docs/security.md"
    assert doc_grants - yaml_grants == set(), "in docs/security.md, not in k8s/kafka-acls"
    text = SECURITY_DOC.read_text()
    for user in PRINCIPALS.values():
        assert f"(`{user}`)" in text, f"the principals table lacks {user}"


def test_names_are_the_code_s() -> None:
    s = Settings()
    topics = set(s.topics.all().values())
    replies = s.topics.search_replies
    groups = {getattr(s, section).group_id for section, _ in CONSUMES.values()}
    for user, kind, name, pattern, _ in _yaml_grants():
        if kind == "topic" and pattern == "literal":
            assert name in topics, f"{user}: {name} is not a topic of the settings"
        elif kind == "topic":
            assert name in (replies, f"{replies}.", "shopvec."), f"{user}: prefix {name}"
        elif kind == "group" and pattern == "literal":
            assert name in groups, f"{user}: {name} is not a worker's group"
        elif kind == "group":
            # shopvec.kafka.config.reply_reader_config; shopvec.indexing.reindex;
            # shopvec.kafka.positions (the indexer's and the reindex's).
            positions = positions_group(s, "")
            assert name in ("shopvec-client-", "shopvec-reindex-", positions, "shopvec-size-") or (
                user == PRINCIPALS["operator"] and name == "shopvec-operator-"
            ), f"{user}: group prefix {name}"


@pytest.mark.parametrize("kind", WORKER_KINDS)
def test_workers_change_nothing_and_read_only_their_input(kind: str) -> None:
    s = Settings()
    user = PRINCIPALS[kind]
    for who, rkind, name, _, op in _yaml_grants():
        if who != user:
            continue
        assert rkind != "cluster", f"{user} has {op} on the cluster"
        assert op not in CHANGES, f"{user} may {op} {rkind} {name}: no worker creates or alters"
    section, topic_key = CONSUMES[kind]
    consumed = getattr(s.topics, topic_key)
    assert _allowed(user, "Read", "topic", consumed)
    assert _allowed(user, "Read", "group", getattr(s, section).group_id)
    if kind == "indexer":
        assert _allowed(user, "Read", "group", positions_group(s, "products_any_model"))
    assert _allowed(user, "Write", "topic", s.topics.dead_letters)
    for topic in s.topics.all().values():
        if topic != consumed:
            assert not _allowed(user, "Read", "topic", topic), f"{user} reads {topic}"
    for topic in (s.topics.products, s.topics.user_events, s.topics.search_requests):
        assert not _allowed(user, "Write", "topic", topic), f"{user} writes {topic}"


def test_query_worker_writes_replies_by_a_prefix_on_the_replies_topic() -> None:
    s = Settings()
    user, replies = PRINCIPALS["query"], s.topics.search_replies
    writes = [g for g in _yaml_grants() if g[0] == user and g[4] == "Write"]
    reply_writes = [g for g in writes if g[2].startswith(replies)]
    assert reply_writes == [(user, "topic", replies, "prefixed", "Write")]
    assert {g[2] for g in writes} == {replies, s.topics.dead_letters}
    # Every topic the worker's default pattern list allows is one the broker lets it write.
    assert s.reply_topic_patterns() == [replies, f"{replies}.*"]
    for topic in (replies, _private_reply_topic(s.topics)):
        assert _allowed(user, "Write", "topic", topic)


def test_search_clients_make_their_own_reply_topics_and_nothing_else() -> None:
    s = Settings()
    user, private = PRINCIPALS["search-client"], _private_reply_topic(s.topics)
    for op in ("Create", "Read", "Delete"):
        assert _allowed(user, op, "topic", private), f"{user} cannot {op} {private}"
    assert _allowed(user, "Read", "group", f"shopvec-client-{uuid.uuid4().hex}")
    assert _allowed(user, "Write", "topic", s.topics.search_requests)
    assert _allowed(user, "Read", "topic", s.topics.search_replies)
    for topic in s.topics.all().values():
        if topic != s.topics.search_requests:
            assert not _allowed(user, "Write", "topic", topic), f"{user} writes {topic}"
        assert not _allowed(user, "Create", "topic", topic), f"{user} creates {topic}"
        assert not _allowed(user, "Delete", "topic", topic), f"{user} deletes {topic}"
    for topic in (s.topics.products, s.topics.user_events, s.topics.search_requests):
        assert not _allowed(user, "Read", "topic", topic), f"{user} reads {topic}"
    assert not _allowed(user, "Read", "topic", s.topics.dead_letters)
    for section, _ in CONSUMES.values():
        assert not _allowed(user, "Read", "group", getattr(s, section).group_id)
    assert PRINCIPALS["search-client"] in {
        u for u, spec in ((n, u["spec"]) for n, u in _users().items()) if "quotas" in spec
    }, "search clients run under quotas"


@pytest.mark.parametrize(
    ("principal", "topic_key"), [("catalog", "products"), ("tracker", "user_events")]
)
def test_producers_write_one_topic(principal: str, topic_key: str) -> None:
    s = Settings()
    user = PRINCIPALS[principal]
    grants = {g for g in _yaml_grants() if g[0] == user}
    assert {g[2] for g in grants} == {getattr(s.topics, topic_key)}
    assert {g[4] for g in grants} <= {"Write", "Describe"}


def test_only_operators_create_shared_topics() -> None:
    s = Settings()
    creators = {
        user
        for user in PRINCIPALS.values()
        for topic in s.topics.all().values()
        if _allowed(user, "Create", "topic", topic)
    }
    assert creators == {PRINCIPALS["operator"]}
    assert not any(g[1] == "cluster" for g in _yaml_grants()), "nobody needs cluster rights"
