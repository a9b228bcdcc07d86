"""The page in a real browser: Debian's chromium, headless, driven by Playwright, against the
application served by uvicorn on a loopback port with the in-memory backend.

Playwright's own browser download cannot reach this network, so the browser is the system's
(/usr/bin/chromium, installed by .ci/browser where it can be); without it these tests skip and
say why.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopvec.http import create_app
from shopvec.settings import HttpSettings, Settings
from shopvec.stack import free_port
from tests.unit.http_fakes import memory_backend

CHROMIUM = Path(os.environ.get("SHOPVEC_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    found = CHROMIUM if CHROMIUM.is_file() else None
    if found is None:
        which = shutil.which("chromium")
        found = Path(which) if which else None
    if found is None:
        pytest.skip(
            f"no chromium at {CHROMIUM}: the browser tests need Debian's chromium package "
            "(`.ci/browser` installs it when run as root; `apt-get install chromium`)"
        )
    return str(found)


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    import uvicorn

    port = free_port()
    settings = Settings(http=HttpSettings(port=port))
    config = uvicorn.Config(
        create_app(settings, memory_backend()),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API holds an asyncio loop as the main thread's running
    loop while it is open, and asyncio.run() in any later test would refuse to start."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, page_url: str) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(page_url)
    yield page
    context.close()
    assert not errors, f"the page reported errors: {errors}"
