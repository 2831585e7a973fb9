"""Browser fixtures: Debian's headless Chromium driven by Playwright (never a downloaded browser).

``/usr/bin/chromium`` comes from the ``chromium`` Debian package (notes/browser.md). When it is
missing the browser tests are skipped locally and fail under CI (``CI`` set), so that CI can
never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
#: Flags Chromium needs as root on a closed network (notes/browser.md).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium_path() -> Path:
    """``/usr/bin/chromium``; skips the test when it is missing, fails it under ``CI``."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium under CI: {message}")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    """A headless Chromium; every ``browser.new_context()`` gets a fresh profile (own
    sessionStorage). Closed after the test."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
