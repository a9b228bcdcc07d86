"""requirements-lock.txt holds what pyproject.toml asks for: each runtime and dev requirement
pinned to a version its range admits, every pin with hashes. `./dev lock` makes it again."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-lock.txt"


def _pins() -> dict[str, tuple[Version, list[str]]]:
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: list[str] = []
    for raw in LOCK.read_text().splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            current.append(line.removeprefix("--hash="))
            continue
        assert not line.startswith("-"), f"an option in the lock: {line}"
        name, sep, version = line.partition("==")
        assert sep and not raw.startswith(" "), f"not a pin: {line}"
        current = []
        pins[canonicalize_name(name)] = (Version(version.strip()), current)
    return pins


def _wanted() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]
    ]


PINS = _pins()


@pytest.mark.parametrize("requirement", _wanted(), ids=str)
def test_pyproject_requirement_is_pinned_within_its_range(requirement: Requirement) -> None:
    name = canonicalize_name(requirement.name)
    assert name in PINS, f"{requirement} is not in the lock: run ./dev lock"
    version, _ = PINS[name]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"the lock pins {name}=={version}, outside {requirement}: run ./dev lock"
    )


def test_every_pin_has_sha256_hashes() -> None:
    assert len(PINS) > 50
    for name, (_, hashes) in PINS.items():
        assert hashes, f"{name} has no hash"
        assert all(h.startswith("sha256:") and len(h) == 7 + 64 for h in hashes), name


def test_the_lock_names_the_command_that_makes_it() -> None:
    assert "#    ./dev lock" in LOCK.read_text()


def _subset(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "lock_subset.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_image_takes_torch_by_version_and_the_rest_with_hashes() -> None:
    """What the Dockerfile's CPU variant installs: torch and torchvision at the lock's versions
    from the CPU index, then the lock less them and the CUDA packages, hashes and all."""
    torch = _subset("--only", "--pins", str(LOCK), "torch", "torchvision").split()
    assert torch == [f"torch=={PINS['torch'][0]}", f"torchvision=={PINS['torchvision'][0]}"]
    cuda = ("torch", "torchvision", "triton", "nvidia-*", "cuda-*")
    rest = _subset(str(LOCK), *cuda)
    kept = {
        name for name in PINS if not any(fnmatch.fnmatchcase(name, pattern) for pattern in cuda)
    }
    assert sum(line.count("==") for line in rest.splitlines() if "==" in line) == len(kept)
    for name in kept:
        assert all(h in rest for h in PINS[name][1]), name
    assert not [line for line in rest.splitlines() if line.startswith(("torch", "nvidia-"))]
