"""numpy's BLAS limited to one thread, as the workers run it."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from shopvec.threads import blas_libraries, limit_blas_threads


def _threads(path: str) -> int | None:
    lib = ctypes.CDLL(path)
    for name in (
        "scipy_openblas_get_num_threads64_",
        "openblas_get_num_threads64_",
        "openblas_get_num_threads",
    ):
        getter = getattr(lib, name, None)
        if getter is not None:
            return int(getter())
    return None


def test_every_loaded_openblas_is_set_to_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    np.ones((4, 4)) @ np.ones((4, 4))
    libraries = blas_libraries()
    if not libraries:
        pytest.skip("no OpenBLAS loaded here (not Linux, or numpy built on another BLAS)")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    before = {path: _threads(path) for path in libraries}
    try:
        assert limit_blas_threads() == libraries
        assert all(_threads(path) == 1 for path in libraries)
        assert float((np.ones((64, 64)) @ np.ones((64, 64)))[0, 0]) == 64.0
    finally:
        threads = max((n for n in before.values() if n), default=0)
        if threads:
            limit_blas_threads(threads)


def test_an_explicit_environment_setting_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert limit_blas_threads() == []
