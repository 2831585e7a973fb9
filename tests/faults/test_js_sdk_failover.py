"""The JavaScript SDK survives a gateway kill (issue 13 item 5): a client sending on the first of
two gateways fails over to the second when the first is killed with SIGKILL mid-stream; its
sends are resent with their client_msg_id and the rooms re-joined with ``since``, so every
message is stored once, acked once, and seen exactly once and in order by the sender and by a
member on the other gateway. Under Node.js 20 and in headless Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.faults.conftest import Topology, TopologyFactory
from tests.js_driver import run_in_browser, run_node

#: Messages per run; the kill comes after the first third is acked.
COUNT = 60
#: A page of one gateway opens sockets to both (the Origin rule would refuse the other one).
ANY_ORIGIN = {"NATTER_GATEWAY_ALLOWED_ORIGINS": '["*"]'}


Runner = Callable[[dict[str, Any], Any], Awaitable[dict[str, Any]]]


async def kill_mid_stream(topology: TopologyFactory, run: Callable[[Topology], Runner]) -> None:
    """Two gateways; the scenario runs through ``run(topo)(config, on_event)``; gateway 0 is
    killed (SIGKILL) at the scenario's ``kill`` event; every message counted once."""
    topo = await asyncio.to_thread(topology, gateways=2, env=ANY_ORIGIN)
    killed: list[bool] = []

    async def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "kill" and not killed:
            killed.append(True)
            await asyncio.to_thread(topo.stack.gateways[0].kill)

    config = {"http": topo.http_url(1), "urls": topo.ws_urls, "count": COUNT}
    result = await run(topo)(config, on_event)
    assert killed == [True], "the gateway was never killed"
    assert result["sent"] == result["acked"] == COUNT, result
    assert result["last"] - result["first"] == COUNT - 1, result


@pytest.mark.timeout(180)
async def test_node_client_fails_over_when_its_gateway_is_killed(
    topology: TopologyFactory, node: str
) -> None:
    await kill_mid_stream(
        topology,
        lambda topo: lambda config, on_event: run_node(node, "failover", config, on_event, timeout=150),
    )


@pytest.mark.browser
@pytest.mark.timeout(180)
async def test_browser_client_fails_over_when_its_gateway_is_killed(
    topology: TopologyFactory, browser: Browser
) -> None:
    await kill_mid_stream(
        topology,
        lambda topo: (
            lambda config, on_event: run_in_browser(browser, topo.http_url(1), "failover", config, on_event)
        ),
    )
