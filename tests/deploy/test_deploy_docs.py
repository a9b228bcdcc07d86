"""docs/deployment.md names only images, ports, variables, volumes and paths that exist in the
deployment files, and names every image, published port and volume they use."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deploykit import (
    COMPOSE_ENV_FILE,
    COMPOSE_FILE,
    DOCKERFILE,
    DOCS,
    GPU_COMPOSE_FILE,
    K8S,
    OVERLAYS,
    ROOT,
    arg_defaults,
    dockerfile_stages,
    load_settings,
    load_yaml,
    render,
    setting_names,
)

KNOWN_REPOSITORIES = {"shopvec", "python"}


def _image_references(text: str) -> set[str]:
    """Words of the form repository:tag that name an image: the repository has a slash or is
    one of ours, and the tag is not a port number (kafka:9092 is an address)."""
    found = set()
    for word in re.split(r"[\s`|()\[\],;]+", text):
        word = word.rstrip(".:")
        match = re.fullmatch(r"([a-z0-9][a-z0-9_.-]*(?:/[a-z0-9_.-]+)*):([A-Za-z0-9][\w.-]*)", word)
        if not match or match.group(2).isdigit():
            continue
        repository = match.group(1)
        if "/" in repository or repository in KNOWN_REPOSITORIES:
            found.add(word)
    return found


@pytest.fixture(scope="module")
def docs() -> str:
    return DOCS.read_text()


def _compose_images() -> set[str]:
    images = set()
    for path in (COMPOSE_FILE, GPU_COMPOSE_FILE):
        images |= {s["image"] for s in load_yaml(path)["services"].values() if "image" in s}
    return images


def _k8s_images() -> set[str]:
    return {
        c["image"]
        for overlay in OVERLAYS
        for _, pod in render(K8S / "overlays" / overlay).pod_specs()
        for c in pod["containers"]
    }


def _build_args() -> dict[str, str]:
    return {k: v for stage in dockerfile_stages() for k, v in arg_defaults(stage).items()}


def _published_host_ports() -> set[int]:
    ports = set()
    for service in load_yaml(COMPOSE_FILE)["services"].values():
        for mapping in service.get("ports", []):
            ports.add(int(str(mapping).split(":")[-2]))
    return ports


def test_images_named_exist(docs: str) -> None:
    used = _compose_images() | _k8s_images()
    known = used | {_build_args()["PYTHON_IMAGE"]}
    unknown = sorted(_image_references(docs) - known)
    assert not unknown, f"docs/deployment.md names images the files do not use: {unknown}"
    missing = sorted(used - _image_references(docs))
    assert not missing, f"docs/deployment.md does not name: {missing}"


def test_ports_named_exist(docs: str) -> None:
    published = _published_host_ports()
    named = {int(p) for p in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", docs)}
    assert named <= published, f"not published by docker-compose.yml: {sorted(named - published)}"
    assert published <= named, f"published but not in the docs: {sorted(published - named)}"


def test_variables_named_exist(docs: str) -> None:
    compose_text = COMPOSE_FILE.read_text()
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", compose_text))
    known = set(setting_names()) | interpolated
    named = set(re.findall(r"\bSHOPVEC_[A-Z0-9_]+\b", docs))
    assert named <= known, f"not a setting nor a compose variable: {sorted(named - known)}"
    args = _build_args()
    named_args = set(re.findall(r"--build-arg ([A-Z_]+)=", docs))
    table_args = set(re.findall(r"^\| `([A-Z_]+)` \|", docs, flags=re.MULTILINE))
    assert named_args <= set(args), f"not Dockerfile ARGs: {sorted(named_args - set(args))}"
    assert set(args) <= table_args, (
        f"build arguments not documented: {sorted(set(args) - table_args)}"
    )
    for name, default in args.items():
        if default:
            assert f"`{default}`" in docs, f"the default of {name} differs from the docs"
    # Any other variable the page names (HF_HUB_OFFLINE, ...) is set somewhere in the files.
    files = [DOCKERFILE, COMPOSE_FILE, GPU_COMPOSE_FILE, COMPOSE_ENV_FILE, *sorted(K8S.rglob("*"))]
    files = [f for f in files if f.is_file()]
    text = "\n".join(path.read_text() for path in files)
    others = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`", docs)) - known - set(args)
    absent = sorted(v for v in others if not re.search(rf"\b{v}\b", text))
    assert not absent, f"docs/deployment.md names variables no file sets: {absent}"


def test_volumes_named_exist(docs: str) -> None:
    declared = set(load_yaml(COMPOSE_FILE)["volumes"])
    named = set(re.findall(r"`(?:shopvec_)?([a-z]+-data)`", docs))
    assert named == declared, f"docs {sorted(named)} vs docker-compose.yml {sorted(declared)}"


def test_paths_named_exist(docs: str) -> None:
    paths = set(re.findall(r"`((?:deploy|k8s|tests|docs|workers|data)/[\w./-]+)`", docs))
    paths |= set(re.findall(r"(?<![\w/])((?:deploy|k8s)/[\w./-]+\.(?:yml|yaml|env|json))", docs))
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"docs/deployment.md names paths that do not exist: {missing}"


def test_sizing_section(docs: str) -> None:
    section = docs.split("## Scale on paper", 1)
    assert len(section) == 2, "the sizing section is missing"
    body = section[1]
    for figure in ("65.76 products/s", "72.5 images/s", "1,525", "19.5 images/s", "assumed"):
        assert figure in body, f"the sizing section lacks {figure!r}"
    # Each measured input names the command that printed it, and its figures are those of
    # docs/benchmarks.md or docs/evaluation.md.
    measured = DOCS.parent / "benchmarks.md", DOCS.parent / "evaluation.md"
    sources = "\n".join(path.read_text() for path in measured)
    inputs = body.split("### Inputs", 1)[1].split("\n### ", 1)[0]
    rows = [row for row in inputs.splitlines() if row.startswith("| ") and "measured" in row]
    assert len(rows) >= 3, "the sizing section has no measured inputs"
    for row in rows:
        assert "`shopvec bench " in row, f"a measured input without its command: {row}"
        for number in re.findall(r"\d+\.\d+|\d{1,3}(?:,\d{3})+", row.split("|")[2]):
            assert number in sources, f"{number} is in no benchmark page: {row}"
    for topic in ("shopvec.products", "shopvec.search.requests", "shopvec.user-events"):
        assert topic in body
    # The partition counts on paper are those of the prod overlay.
    prod = render(K8S / "overlays" / "prod")
    settings = load_settings(
        prod.container_env(prod.deployment("indexer")["spec"]["template"]["spec"]["containers"][0])
    )
    for role, topic in settings.topics.all().items():
        count = settings.topics.partitions[role]
        row = re.search(rf"^\| `{re.escape(topic)}` \|.*\| (\d+) \|$", body, flags=re.MULTILINE)
        assert row and int(row.group(1)) == count, f"{topic}: the prod overlay has {count}"
