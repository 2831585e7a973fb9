"""Fixtures for the tools outside Python that tests drive: Debian's headless Chromium through
Playwright (never a downloaded browser) and Node.js 20+ (the JavaScript SDK's tests).

``/usr/bin/chromium`` comes from the ``chromium`` Debian package (notes/browser.md), ``node``
from the machine image. When one is missing its tests are skipped locally and fail under CI
(``CI`` set), so that CI can never pass by skipping them. Registered for every test by
``tests/conftest.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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


#: The oldest Node.js the JavaScript SDK supports (issue 13: Node 20).
NODE_MAJOR = 20


def missing(message: str) -> None:
    """Skip the test on a developer's machine, fail it under CI (``CI`` set)."""
    if os.environ.get("CI"):
        pytest.fail(f"needed under CI: {message}")
    pytest.skip(message)


@pytest.fixture
def chromium_path() -> Path:
    """``/usr/bin/chromium``; skips the test when it is missing, fails it under ``CI``."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture
def node() -> str:
    """The ``node`` executable (Node.js 20 or newer); skipped when missing, failed under ``CI``."""
    found = shutil.which("node")
    if found is None:
        missing("node is not installed (Node.js 20+)")
        raise AssertionError  # unreachable: missing() skips or fails
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < NODE_MAJOR:
        missing(f"Node.js {NODE_MAJOR}+ is needed, found {version.strip() or 'nothing'}")
    return found


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
