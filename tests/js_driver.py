"""Run a scenario of tests/js/scenarios.mjs (the JavaScript SDK against a real stack) under
Node.js or in headless Chromium, relaying its progress events to the Python test: the
``kill`` event of the failover scenario is where the test kills a gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Route

JS_DIR = Path(__file__).parent / "js"
SCENARIOS = JS_DIR / "scenarios.mjs"
#: Where the browser page imports the scenarios from (served by a Playwright route).
SCENARIOS_PATH = "/__natter_test__/scenarios.mjs"

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


async def _ignore(_event: dict[str, Any]) -> None:
    return None


async def run_node(
    node: str, scenario: str, config: dict[str, Any], on_event: OnEvent = _ignore, timeout: float = 120.0
) -> dict[str, Any]:
    """``node --experimental-websocket tests/js/run.mjs scenario config``: the scenario's result.

    Raises:
        AssertionError: the scenario failed (its message and stack), or printed no result.
    """
    process = await asyncio.create_subprocess_exec(
        node,
        "--experimental-websocket",
        "--no-warnings",
        str(JS_DIR / "run.mjs"),
        scenario,
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    result: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(timeout):
            async for raw in process.stdout:
                event = json.loads(raw)
                if event.get("event") == "result":
                    result = event["result"]
                elif event.get("event") == "error":
                    failure = event
                else:
                    await on_event(event)
            stderr = (await process.stderr.read()).decode(errors="replace")
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert failure is None, (
        f"{scenario} failed under Node: {failure['message']}\n{failure['stack']}\n{stderr}"
    )
    assert code == 0 and result is not None, f"node exited {code} without a result\n{stderr[-4000:]}"
    return result


async def run_in_browser(
    browser: Browser, origin: str, scenario: str, config: dict[str, Any], on_event: OnEvent = _ignore
) -> dict[str, Any]:
    """Open a page of ``origin`` (its ``/health``, a document without the web client), import
    ``/sdk/natter.js`` and the scenarios there, run ``scenario``: its result.

    Raises:
        AssertionError: the scenario failed, or the page reported an uncaught error.
    """
    context = await browser.new_context()
    page = await context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def serve_scenarios(route: Route) -> None:
        await route.fulfill(body=SCENARIOS.read_text(), content_type="text/javascript")

    async def relay() -> None:
        while True:
            await on_event(await events.get())

    await page.route(f"**{SCENARIOS_PATH}", serve_scenarios)
    await page.expose_function("natterTestLog", lambda event: events.put_nowait(event))
    await page.goto(f"{origin}/health")
    relaying = asyncio.create_task(relay())
    try:
        outcome: dict[str, Any] = await page.evaluate(
            """async ([name, config, path]) => {
                const natter = await import("/sdk/natter.js");
                const scenarios = await import(path);
                try {
                    return {result: await scenarios[name](natter, config, (e) => window.natterTestLog(e))};
                } catch (err) {
                    return {error: String(err && err.message), stack: String(err && err.stack)};
                }
            }""",
            [scenario, config, SCENARIOS_PATH],
        )
    finally:
        relaying.cancel()
        await context.close()
    assert "error" not in outcome, f"{scenario} failed in Chromium: {outcome['error']}\n{outcome['stack']}"
    assert not page_errors, page_errors
    return dict(outcome["result"])
