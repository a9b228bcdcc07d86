"""numpy's BLAS on one thread in the processes that serve.

OpenBLAS keeps its helper threads spinning for a while after every call: after a one-title
text encode, the process went on using CPU while it slept. A worker
answering 20 requests a second thus keeps a whole core busy doing nothing, a core that the
broker, Milvus and its own next request wait for. The products of a query or a batch of titles
are small; one thread loses nothing on them and spins on none.

The number is the setting `blas_threads` (0 leaves OpenBLAS as it started: OPENBLAS_NUM_THREADS
or every core). torch has its own thread pool (torch.set_num_threads) and is not touched.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

__all__ = ["blas_libraries", "limit_blas_threads"]

log = logging.getLogger(__name__)

_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def blas_libraries() -> list[str]:
    """The OpenBLAS libraries this process has loaded (Linux; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted(
        {
            line.split()[-1]
            for line in maps.splitlines()
            if "openblas" in line.rsplit("/", 1)[-1].lower() and "/" in line
        }
    )


def limit_blas_threads(threads: int) -> list[str]:
    """Sets every loaded OpenBLAS to `threads` threads (0: leaves them alone); returns the
    libraries it set. Call it once numpy is imported."""
    if threads <= 0:
        return []
    done = []
    for path in blas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                done.append(path)
                break
    if done:
        log.info("BLAS on %d thread(s): %s", threads, ", ".join(done))
    return done
