"""Renders of the kustomize trees, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.deploy.deploykit import K8S, OVERLAYS, Rendered, render

COMPONENT_SETS = {
    "base": (),
    "base+keda": ("keda",),
    "base+hpa-cpu": ("hpa-cpu",),
    "base+keda+clip-weights": ("keda", "clip-weights"),
}
"""The base with each component on its own: a component must work outside the overlay that
uses it (hpa-cpu is the documented replacement for keda in prod, for instance).
keda-kafka-auth is left out: it belongs with SASL_SSL settings, and the prod overlay has both."""

TREES = (*OVERLAYS, *COMPONENT_SETS)


def _component_tree(root: Path, components: tuple[str, ...]) -> Path:
    # kustomize refuses absolute paths: point at the tree with relative ones.
    base = os.path.relpath(K8S / "base", root)
    lines = [
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
        f"  - {base}",
    ]
    if components:
        lines.append("components:")
        lines += [f"  - {os.path.relpath(K8S / 'components' / c, root)}" for c in components]
    (root / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = {name: K8S / "overlays" / name for name in OVERLAYS}
    for name, components in COMPONENT_SETS.items():
        paths[name] = _component_tree(tmp_path_factory.mktemp(name), components)
    return paths


@pytest.fixture(scope="session", params=TREES)
def tree(request: pytest.FixtureRequest, trees: dict[str, Path]) -> tuple[str, Rendered]:
    """(name, objects) of each overlay and of the base with each set of components."""
    return request.param, render(trees[request.param])


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    return request.param, render(K8S / "overlays" / request.param)
