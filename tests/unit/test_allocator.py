import ctypes
import ctypes.util
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from shopvec.allocator import keep_freed_memory, running_threads
from shopvec.settings import Settings

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not ctypes.util.find_library("c"),
    reason="glibc's mallopt",
)

# In a process of its own (a thread that has allocated keeps its arena): a thread other than
# the main one, as the indexer's encoder is, fills a 128 MB array three times; the page faults
# of the last two rounds tell whether the memory was mapped anew each time.
_ROUNDS = textwrap.dedent(
    """
    import resource, sys, threading
    import numpy as np
    from shopvec.allocator import keep_freed_memory

    keep_freed_memory(int(sys.argv[1]))
    faults = []

    def rounds():
        for i in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = np.ones(32 << 20, dtype=np.float32)
            del block
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    thread = threading.Thread(target=rounds)
    thread.start()
    thread.join()
    print(sum(faults[1:]))
    """
)


# Frees more than it keeps (two 40 MiB blocks, each under the bound, so from the heap: the
# top of the heap passes the trim threshold), then allocates 40 MiB again: its page faults tell
# whether glibc gave back all the freed memory or kept the bound.
_PAST_THE_BOUND = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from shopvec.allocator import keep_freed_memory

    keep_freed_memory(int(sys.argv[1]))
    first, second = np.ones(10 << 20, dtype=np.float32), np.ones(10 << 20, dtype=np.float32)
    del first, second
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = np.ones(10 << 20, dtype=np.float32)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(keep_mb: int, code: str = _ROUNDS) -> int:
    out = subprocess.run(
        [sys.executable, "-c", code, str(keep_mb)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout.strip())


def test_zero_leaves_malloc_alone():
    assert keep_freed_memory(0) is False


@glibc
def test_glibc_takes_the_settings():
    # Harmless to this process: the same settings every worker runs with.
    assert keep_freed_memory(Settings().malloc_keep_mb) is True


@glibc
def test_a_thread_reuses_what_it_freed():
    # Mapped anew, each round of 128 MB faults in every page again: at least 64 a round with
    # 2 MiB (transparent huge) pages, 32,768 with 4 KiB ones. Kept, the pages are there.
    assert _faults(0) >= 128
    assert _faults(1024) < 16


@glibc
def test_freeing_past_the_bound_keeps_the_bound():
    # 40 MiB faulted in anew: at least 20 faults with 2 MiB pages, 10,240 with 4 KiB ones.
    assert _faults(0, _PAST_THE_BOUND) >= 20
    assert _faults(64, _PAST_THE_BOUND) < 16


def test_default_keeps_a_gigabyte():
    assert Settings().malloc_keep_mb == 1024


@glibc
def test_warns_when_threads_already_run(caplog):
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert running_threads() >= 2
        with caplog.at_level(logging.WARNING, logger="shopvec.allocator"):
            assert keep_freed_memory(Settings().malloc_keep_mb) is True
    finally:
        release.set()
        thread.join()
    assert any("threads already running" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="threads counted in /proc")
def test_importing_a_worker_or_the_memory_child_starts_no_thread():
    # Each sets malloc up after its imports and before it builds anything: numpy and pyarrow,
    # which start threads as they are imported, must come after (shopvec.allocator).
    modules = "workers.indexer, workers.query, workers.behaviour, workers.http"
    code = (
        f"import os, {modules}, shopvec.benchmarks.backlog_child\n"
        "print(len(os.listdir('/proc/self/task')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "1"
