"""A picture of the search page with results, for the README: Debian's chromium, headless,
driven by Playwright (a development dependency), against a running page.

    shopvec up && shopvec backfill data/myntra-sample     # or ./dev demo
    python -m shopvec.http.screenshot docs/page.png --query "blue jeans"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "screenshot"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def screenshot(
    url: str,
    out: Path,
    query: str,
    *,
    category: str | None = None,
    chromium: str = "/usr/bin/chromium",
    width: int = 1280,
    height: int = 960,
) -> int:
    """Searches `query` on the page at `url` and saves what the window shows; returns the
    number of results drawn."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            if category:
                page.get_by_label("Category").fill(category)
            page.get_by_label("Words").fill(query)
            page.get_by_role("button", name="Search", exact=True).click()
            results = page.get_by_role("list", name="Results").get_by_role("listitem")
            expect(results.first).to_be_visible(timeout=30_000)
            page.wait_for_function(
                "Array.from(document.querySelectorAll('#results img')).every(img => img.complete)"
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            return int(results.count())
        finally:
            browser.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shopvec.http.screenshot", description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--url", help="default: the page of the settings' port on loopback")
    p.add_argument("--query", default="blue jeans")
    p.add_argument("--category")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    url = args.url
    if url is None:
        from shopvec.settings import Settings

        url = f"http://127.0.0.1:{Settings().http.port}/"
    shown = screenshot(url, args.out, args.query, category=args.category, chromium=args.chromium)
    print(f"{args.out}: {shown} results for {args.query!r} on {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
