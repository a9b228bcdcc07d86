"""The HTTP API and search page: searches forwarded to the query workers over Kafka."""

from __future__ import annotations

import sys

from shopvec.http.server import serve
from workers._run import load_settings


def main() -> int:
    return serve(load_settings())


if __name__ == "__main__":
    sys.exit(main())
