"""Fixtures of the dashboard's browser tests: a real producer and worker (subprocesses) on the
Redis at 127.0.0.1:6379 (a key prefix of their own), and a headless Chromium (Debian's
``chromium``) driven by Playwright's Python API with ``executable_path`` (``nox -s browser``
installs both; ``playwright install`` is never run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_kit import CHROMIUM, PageLog, Stack


@pytest.fixture
def stack(installed_test_plugin: None, key_prefix: str, tmp_path: Path) -> Iterator[Stack]:
    services = Stack(key_prefix, tmp_path)
    try:
        services.start_producer()
        yield services
    finally:
        services.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM:
        pytest.skip("not run here: Debian's chromium is not installed (nox -s browser does it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="not run here: playwright is not installed"
    )
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page_and_log(browser: Any) -> Iterator[tuple[Any, PageLog]]:
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    page = context.new_page()
    log = PageLog()
    page.on("request", lambda request: log.requests.append(request.url))
    page.on(
        "console",
        lambda msg: (
            log.errors.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda exc: log.errors.append(f"page error: {exc}"))
    try:
        yield page, log
    finally:
        context.close()
