"""The process `shopvec bench ingest --memory-backlogs` runs for each backlog size.

Spawned, the process imports this module, which imports nothing that starts a thread, and its
target sets malloc up first, as a worker's `load_settings` does, before it imports the
benchmark (numpy and pyarrow start threads as they are imported: shopvec.allocator). So the
peak RSS it reports is a worker's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopvec.allocator import keep_freed_memory

if TYPE_CHECKING:
    from shopvec.encoders.base import Encoder
    from shopvec.settings import Settings

__all__ = ["run_backlog"]


def run_backlog(
    settings: Settings, products: int, half_rate_products: int, hashing: bool, out: Any
) -> None:
    keep_freed_memory(settings.malloc_keep_mb)
    from shopvec.benchmarks.ingest import run_ingest_bench

    encoder: Encoder | None = None
    if hashing:
        from shopvec.encoders.hashing import HashingEncoder

        encoder = HashingEncoder()
    try:
        out.put(
            run_ingest_bench(
                settings,
                products=products,
                half_rate_products=half_rate_products,
                encoder=encoder,
            )
        )
    except BaseException as exc:
        out.put({"error": repr(exc)})
        raise
