"""numpy's BLAS limited to one thread, as the workers run it."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import numpy as np
import pytest

from shopvec.settings import Settings
from shopvec.threads import blas_libraries, limit_blas_threads

_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)


def _threads(path: str) -> int | None:
    lib = ctypes.CDLL(path)
    for name in _GETTERS:
        getter = getattr(lib, name, None)
        if getter is not None:
            return int(getter())
    return None


@pytest.fixture
def libraries() -> Iterator[list[str]]:
    np.ones((4, 4)) @ np.ones((4, 4))
    found = blas_libraries()
    if not found:
        pytest.skip("no OpenBLAS loaded here (not Linux, or numpy built on another BLAS)")
    before = {path: _threads(path) for path in found}
    yield found
    threads = max((n for n in before.values() if n), default=0)
    if threads:
        limit_blas_threads(threads)


def test_every_loaded_openblas_is_set_to_the_workers_setting(libraries: list[str]) -> None:
    assert Settings().blas_threads == 1
    assert limit_blas_threads(Settings().blas_threads) == libraries
    assert all(_threads(path) == 1 for path in libraries)
    assert float((np.ones((64, 64)) @ np.ones((64, 64)))[0, 0]) == 64.0


def test_zero_leaves_openblas_as_it_was(libraries: list[str]) -> None:
    limit_blas_threads(1)
    assert limit_blas_threads(0) == []
    assert all(_threads(path) == 1 for path in libraries)
