"""glibc's malloc, told to keep the memory an encoder frees for its next batch.

By default glibc serves an allocation above its mmap threshold (128 KiB, raised on the fly to
at most 32 MiB) with a mapping of its own and unmaps it when it is freed; and a thread other
than the main one allocates from an arena whose heaps hold at most 64 MiB, so anything larger
is mapped whatever the threshold. An encoder's activations are such allocations (the offline
image model on a batch of 32 photos makes tensors of up to 154 MB, dozens of them a batch), so
every batch mapped them anew, the kernel zeroed each page on first touch and unmapped them
after: 43% of the two cores went to the kernel, and the image model ran at half the rate it
reaches when the memory is kept (docs/benchmarks.md#memory-kept-between-batches).

`keep_freed_memory(mb)` makes every thread allocate from the main arena (whose heap grows
without that limit), serves allocations under `mb` MiB from it, and keeps up to `mb` MiB of
freed memory at its top instead of giving it back. A process's resident memory then stays
near its peak, which a worker reaches on its first batches anyway. The trim threshold alone
does not keep it: once the free memory at the top passes the threshold, glibc gives back all
of it but its top pad (128 KiB by default), so the pad is raised to `mb` as well. With the
threshold alone, the indexer's heap (1.1 to 1.3 GB in the ingest benchmark) was cut back by
hundreds of megabytes to gigabytes one to three times a run, and its encoder threads faulted
it in again: 80 to 500 page faults a product against 46 to 143 in the raw measurements
(docs/benchmarks.md#the-heap-given-back-whole).

A thread that allocated before the call keeps a heap of its own, which with a pad this large
is never given back once empty (glibc's heaps hold at most 64 MiB).

Call it first thing, before the process starts threads, and before importing what starts
them: numpy starts OpenBLAS's threads as it is imported, pyarrow (under pymilvus) jemalloc's. A
thread that allocated before the call keeps an arena of its own, and with more arenas than the
maximum, new threads take turns among them: one of the indexer's two encoder threads then
worked in the other arena, its large tensors mapped anew each batch (a million page faults,
a quarter to two fifths of its CPU in the kernel, for 500 products). So it warns when it finds
other threads.

glibc only; elsewhere (musl, macOS) it changes nothing and says so.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["keep_freed_memory", "running_threads"]

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def keep_freed_memory(mb: int) -> bool:
    """True when glibc took all four settings; mb <= 0 leaves malloc as it is."""
    if mb <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.info("no mallopt in this C library; malloc left as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    size = min(mb, 2047) << 20
    taken = [
        mallopt(_M_ARENA_MAX, 1),
        mallopt(_M_MMAP_THRESHOLD, size),
        mallopt(_M_TRIM_THRESHOLD, size),
        # What a trim leaves at the top. It is also added to each growth of the heap: address
        # space, resident only once written, but counted where the kernel counts commitments
        # (vm.overcommit_memory=2, a data-size rlimit): set a smaller bound, or 0, there.
        mallopt(_M_TOP_PAD, size),
    ]
    if not all(ok == 1 for ok in taken):
        log.info("mallopt refused a setting (%s); malloc partly as it was", taken)
        return False
    threads = running_threads()
    if threads > 1:
        log.warning(
            "malloc set up with %d threads already running: a thread that allocated before "
            "keeps an arena of its own, where large allocations are mapped anew each time "
            "(set it up before importing numpy or pyarrow)",
            threads,
        )
    return True


def running_threads() -> int:
    """The process's threads, native ones (OpenBLAS's, jemalloc's) included; 1 where the
    system does not tell (no /proc)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1
