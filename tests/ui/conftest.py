"""The browser harness of the playground tests: a real headless Chromium on the real server.

The browser is Debian's ``chromium`` (``apt-get install -y chromium``) driven by
Playwright's Python package; Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.conftest import Server

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Without the background-networking flags Chromium reaches for Google's services, which a
# closed network refuses; the page itself needs nothing but the service.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile, shared by the playground tests."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the playground tests need a real browser. "
            "Install it with `apt-get install -y chromium` (or point CHROMIUM_PATH at one).",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 900},
        )
        yield context
        context.close()


@dataclass
class Playground:
    """The page, and what it did: every URL it requested and every error it logged."""

    page: Page
    server: Server
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """Nothing but the service was asked for anything; no console errors, no exceptions."""
        assert self.requests, "the page made no requests at all"
        external = [url for url in self.requests if not url.startswith(self.server.url + "/")]
        assert external == [], f"the page requested URLs outside the service: {external}"
        assert self.problems == []


@contextmanager
def open_playground(browser: BrowserContext, server: Server) -> Iterator[Playground]:
    """A fresh tab on ``/``, recording requests, console errors and uncaught exceptions."""
    page = browser.new_page()
    page.set_default_timeout(30_000)
    seen = Playground(page, server)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on(
        "console",
        lambda message: seen.problems.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: seen.problems.append(f"uncaught: {error}"))
    try:
        response = page.goto(server.url + "/")
        assert response is not None
        assert response.status == 200
        yield seen
    finally:
        page.close()
