"""The JavaScript SDK (gateway/static/natter.js, issue 13 item 5) against the real stack, the
same scenario under Node.js 20 and in headless Chromium: auth, join, idempotent sends,
attachments, edit/react/reply/read, history, presence, typing, notifications, a token refresh on
the live socket, typed errors, leave, and a logout elsewhere stopping the client."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser

from tests.conftest import Stack
from tests.js_driver import run_in_browser, run_node

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "sdk-js.md"
SDK = ROOT / "gateway" / "static" / "natter.js"


def config(stack: Stack) -> dict[str, object]:
    return {"http": stack.base_url, "urls": [stack.ws_url]}


@pytest.mark.timeout(120)
async def test_the_sdk_under_node(stack: Stack, node: str) -> None:
    result = await run_node(node, "basic", config(stack))
    assert result["events"] == 5, result  # message, file message, edit, reaction, reply


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_the_sdk_in_chromium(stack: Stack, browser: Browser) -> None:
    result = await run_in_browser(browser, stack.base_url, "basic", config(stack))
    assert result["events"] == 5, result  # message, file message, edit, reaction, reply


async def test_the_gateway_serves_the_sdk_as_a_module_to_any_origin(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        answer = await http.get("/sdk/natter.js", headers={"Origin": "https://app.example"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "export class NatterClient" in answer.text


async def test_the_node_example_of_the_docs_runs(stack: Stack, node: str, tmp_path: Path) -> None:
    """docs/sdk-js.md's Node.js example, saved beside a copy of the module, against the stack."""
    block = re.search(r"```js\n(.*?)```", DOCS.read_text(), re.S)
    assert block is not None, "docs/sdk-js.md has no ```js block"
    (tmp_path / "natter.js").write_text(SDK.read_text())
    (tmp_path / "example.mjs").write_text(block.group(1))
    process = await asyncio.create_subprocess_exec(
        node,
        "--experimental-websocket",
        "--no-warnings",
        "example.mjs",
        cwd=tmp_path,
        env={**os.environ, "NATTER_HTTP": stack.base_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-3000:]
    lines = out.decode().splitlines()
    assert any(line.startswith("stored as general:") for line in lines), lines
    assert any(line.endswith(": Hello from Node") for line in lines), lines
