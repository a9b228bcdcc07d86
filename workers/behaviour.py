"""The behaviour worker: user events in, taste vectors and shared counts upserted into Milvus."""

from __future__ import annotations

import sys

from workers._run import load_settings, run_worker


def main() -> int:
    settings = load_settings()
    # Only now: malloc is set up before any import starts a thread (workers/__init__.py).
    from shopvec.runtime import build_behaviour_service

    service, metrics = build_behaviour_service(settings)
    return run_worker("behaviour", settings, service, metrics.registry)


if __name__ == "__main__":
    sys.exit(main())
