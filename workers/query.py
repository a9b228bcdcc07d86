"""The query worker: search requests in, replies out on each request's reply topic."""

from __future__ import annotations

import sys

from workers._run import load_settings, run_worker


def main() -> int:
    settings = load_settings()
    # Only now: malloc is set up before any import starts a thread (workers/__init__.py).
    from shopvec.runtime import build_query_worker

    worker, metrics = build_query_worker(settings)
    return run_worker("query", settings, worker, metrics.registry)


if __name__ == "__main__":
    sys.exit(main())
