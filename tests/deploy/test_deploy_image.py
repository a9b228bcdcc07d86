"""The Dockerfile, and the agreement between it, docker-compose.yml, the Kubernetes Deployments
and the workers' entry points: image, command, user and port."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.deploykit import (
    COMPOSE_ENV_FILE,
    COMPOSE_FILE,
    DOCKERFILE,
    K8S,
    OVERLAYS,
    ROOT,
    SERVICE_KINDS,
    WORKER_KINDS,
    arg_defaults,
    copy_sources,
    dockerfile_instructions,
    dockerfile_stages,
    dockerignore_patterns,
    dockerignored,
    exec_form,
    image_repository,
    load_settings,
    load_yaml,
    parse_compose_env_file,
    render,
    worker_module,
)


def _final_stage() -> list:
    stages = dockerfile_stages()
    assert len(stages) >= 3, "a multi-stage build: a build stage and a runtime stage"
    return stages[-1]


def _one(stage: list, keyword: str) -> str:
    found = [i.value for i in stage if i.keyword == keyword]
    assert found, f"the runtime stage has no {keyword}"
    return found[-1]


def _compose_commands() -> list[list[str]]:
    services = load_yaml(COMPOSE_FILE)["services"]
    return [s["command"] for s in services.values() if isinstance(s.get("command"), list)]


def _k8s_args() -> list[list[str]]:
    found = []
    for overlay in OVERLAYS:
        for _, pod in render(K8S / "overlays" / overlay).pod_specs():
            found += [c["args"] for c in pod["containers"]]
    return found


def test_runtime_stage_is_non_root_with_the_workers_port() -> None:
    stage = _final_stage()
    user = _one(stage, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "USER is a numeric non-root uid (runAsNonRoot)"
    settings = load_settings(
        {k: v for k, v in parse_compose_env_file(COMPOSE_ENV_FILE).items() if v is not None}
    )
    exposed = {int(p.split("/")[0]) for p in _one(stage, "EXPOSE").split()}
    assert exposed == {settings.ops.port}, "EXPOSE the settings' ops port"
    entrypoint = exec_form(_one(stage, "ENTRYPOINT"))
    assert entrypoint[0].endswith("tini") and entrypoint[-1] == "--"
    assert worker_module(exec_form(_one(stage, "CMD"))) in WORKER_KINDS


def test_k8s_runs_as_the_image_user() -> None:
    uid = int(_one(_final_stage(), "USER").split(":")[0])
    for overlay in OVERLAYS:
        for owner, pod in render(K8S / "overlays" / overlay).pod_specs():
            assert pod["securityContext"]["runAsUser"] == uid, owner["metadata"]["name"]


def test_torch_variants_are_build_args() -> None:
    stages = dockerfile_stages()
    build_args = {k: v for stage in stages for k, v in arg_defaults(stage).items()}
    assert build_args["TORCH_VARIANT"] == "cpu", "the CPU-only image is the default"
    assert "TORCH_CPU_INDEX" in build_args and "TORCH_CUDA_INDEX" in build_args
    assert "MODEL_DIR" in build_args and (ROOT / build_args["MODEL_DIR"]).is_dir()
    runs = " ".join(i.value for i in dockerfile_instructions() if i.keyword == "RUN")
    assert re.search(r"\bcpu\)", runs) and re.search(r"\bcuda\)", runs)
    # The pins live in pyproject.toml only; the Dockerfile reads them from there.
    text = DOCKERFILE.read_text()
    assert not re.search(r"torch(vision)?\s*==", text), "do not repeat the torch pins"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"^(torch|torchvision)==", d)]
    assert len(pins) == 2, f"the Dockerfile expects torch and torchvision pinned: {pins}"


def test_build_context_has_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    args: dict[str, str] = {}
    missing, ignored = [], []
    for stage in dockerfile_stages():
        args.update(arg_defaults(stage))
        for instruction in stage:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            for source in copy_sources(instruction, args) or []:
                if not (ROOT / source).exists():
                    missing.append(f"line {instruction.line}: {source}")
                if dockerignored(source, patterns):
                    ignored.append(f"line {instruction.line}: {source}")
    assert not ignored, f".dockerignore leaves out what the Dockerfile copies: {ignored}"
    assert not missing, f"the Dockerfile copies paths the repository lacks: {missing}"
    for private in (
        ".venv",
        ".git",
        "tests",
        "deploy/shopvec.env",
        "k8s/overlays/prod/secrets.env",
    ):
        assert dockerignored(private, patterns), f"{private} should stay out of the image"


def test_worker_entry_points_exist() -> None:
    """Every `python -m workers.X` the deployment files run is a module in workers/."""
    modules = set()
    for command in (
        exec_form(_one(_final_stage(), "CMD")),
        *_compose_commands(),
        *_k8s_args(),
    ):
        kind = worker_module(command)
        if kind:
            modules.add(kind)
    assert modules == set(SERVICE_KINDS)
    missing = [
        f"workers/{m}.py" for m in sorted(modules) if not (ROOT / "workers" / f"{m}.py").is_file()
    ]
    assert not missing, f"the deployment runs modules that do not exist: {missing}"


def test_shopvec_command_exists() -> None:
    """The topic-creation step runs `shopvec topics create`: the console script exists."""
    commands = [c for c in (*_compose_commands(), *_k8s_args()) if c and c[0] == "shopvec"]
    assert ["shopvec", "topics", "create"] in commands
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module = scripts["shopvec"].split(":")[0]
    path = ROOT / module.replace(".", "/")
    assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module


def test_one_image_everywhere() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    ours = [s for s in services.values() if "build" in s]
    assert {image_repository(s["image"]) for s in ours} == {"shopvec"}
    for overlay in OVERLAYS:
        images = {
            c["image"]
            for _, pod in render(K8S / "overlays" / overlay).pod_specs()
            for c in pod["containers"]
        }
        assert len(images) == 1 and image_repository(images.pop()) == "shopvec", overlay
