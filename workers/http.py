"""The HTTP API and search page: searches forwarded to the query workers over Kafka."""

from __future__ import annotations

import sys

from workers._run import load_settings


def main() -> int:
    settings = load_settings()
    # Only now: malloc is set up before any import starts a thread (workers/__init__.py).
    from shopvec.http.server import serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
