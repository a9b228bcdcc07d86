import ctypes
import ctypes.util
import sys

import pytest

from shopvec.allocator import keep_freed_memory
from shopvec.settings import Settings


def test_zero_leaves_malloc_alone():
    assert keep_freed_memory(0) is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not ctypes.util.find_library("c"),
    reason="glibc's mallopt",
)
def test_glibc_takes_the_settings():
    # Harmless to this process: the same settings every worker runs with.
    assert keep_freed_memory(Settings().malloc_keep_mb) is True


def test_default_keeps_a_gigabyte():
    assert Settings().malloc_keep_mb == 1024
