"""Restarts as a user meets them: `shopvec down` then `shopvec up` on the same home, and Milvus
alone stopped and started again. Milvus Lite brings its collections back released; the workers
load them again by themselves, so what was indexed is still found and new products are indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shopvec.catalog import DEMO_CATALOG, myntra_products
from shopvec.client import SearchClient
from shopvec.publish import EventPublisher
from shopvec.stack import EmbeddedStack
from tests.integration.cli_stack import CliStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The behaviour worker is left out: it adds nothing to what is searched, and a start-up.
WORKERS = ("indexer", "query")


def _distinct_titles(n: int) -> Iterator[Any]:
    """Demo products whose titles no other picked one shares, so each is its title's top hit."""
    seen: set[str] = set()
    for product in myntra_products(DEMO_CATALOG):
        if product.title not in seen:
            seen.add(product.title)
            yield product
        if len(seen) == n:
            return


def test_products_stay_searchable_across_restarts(
    tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    shell = CliStack.at(tmp_path / "stack")
    cli, settings = shell.run, shell.settings

    def up() -> None:
        cli("up", "--workers", *WORKERS)

    def searchable(products: Sequence[Any], what: str) -> None:
        # A new client after every restart: the broker may be a new one, with new topics.
        with SearchClient(settings, timeout_s=20) as client:

            def found() -> bool:
                for product in products:
                    reply = client.search(product.title, top_k=1)
                    if not reply.results or reply.results[0].product_id != product.id:
                        return False
                return True

            wait_for(found, 90, what)

    def publish(products: Sequence[Any]) -> None:
        EventPublisher(settings).send_all(list(products), progress=False)

    catalog = list(_distinct_titles(6))
    before, after_down, after_milvus = catalog[:4], catalog[4:5], catalog[5:]
    up()
    try:
        publish(before)
        searchable(before, "the first products")

        cli("down")
        up()
        searchable(before, "the first products after down and up")
        publish(after_down)
        searchable(after_down, "a product published after down and up")

        assert EmbeddedStack(settings).stop(["milvus"]) == ["milvus"]
        up()
        searchable(before + after_down, "every product after Milvus alone restarted")
        publish(after_milvus)
        searchable(after_milvus, "a product published after Milvus restarted")
    finally:
        cli("down")
