"""Edge inputs never drop a socket (issue 10, items 4 and 5; PROTOCOL.md sections 1, 2 and 7).

Lone surrogate escapes, absurd nesting and frames before authentication each get the error the
protocol names, the socket stays usable (or is closed with a close frame where section 2 says
so), and a client that obeys ``retry_after`` is never closed for abuse.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.test_ws_errors import pair, still_usable
from tests.support import WsClient, connect, expect_close, register, unique_name

DEEP = 10_000


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ('{"type":"ping","id":"\\ud800"}', ["id"]),
        ('{"type":"ping","id":"ok","\\udfff":1}', ["\\udfff"]),
        ('{"type":"chat_message","room":"R","message":"hi \\udc00 there","id":"m1"}', ["message"]),
        ('{"type":"chat_message","room":"R","message":"x","client_msg_id":"\\ud83d","id":"m2"}', None),
        ('{"type":"ping","id":"deep","x":' + "[" * DEEP + "]" * DEEP + "}", []),
        ('{"type":"ping","id":"deep2","x":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}", []),
    ],
    ids=["surrogate-id", "surrogate-key", "surrogate-text", "surrogate-msg-id", "deep-array", "deep-object"],
)
async def test_edge_frame_gets_validation_error_and_socket_stays(
    stack: Stack, raw: str, loc: list[str] | None
) -> None:
    room = unique_name("r")
    a, b = await pair(stack, room)
    await a.conn.send(raw.replace('"room":"R"', f'"room":"{room}"'))
    error = await a.recv_type("error")
    assert error["code"] == "validation_error", error
    assert error["details"], error
    if loc is not None:
        assert error["details"][0]["loc"] == loc
    assert "id" not in error or error["id"] in ("ok", "m1", "m2", "deep", "deep2")
    await still_usable(a, b, room)
    history = await b.request({"type": "history", "room": room})
    assert [m["message"] for m in history["messages"]] == ["still here"]
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"dance"}',
        "{not json",
        '{"type":"ping","id":"\\ud800"}',
        '{"no":"type"}',
        "[1,2,3]",
        '{"type":"join","room":"general"}',
        b"\x00binary",
    ],
    ids=["unknown-type", "not-json", "malformed-ping", "no-type", "not-object", "join", "binary"],
)
async def test_any_frame_but_auth_and_ping_before_auth_is_auth_required_1008(
    stack: Stack, frame: str | bytes
) -> None:
    client = await connect(stack.ws_url)
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    await client.conn.send(frame)
    error = await client.recv()
    assert error["type"] == "error" and error["code"] == "auth_required", error
    code, reason = await expect_close(client)
    assert (code, reason) == (1008, "auth required")


async def test_malformed_auth_frame_is_auth_failed_1008(stack: Stack) -> None:
    client = await connect(stack.ws_url)
    await client.send({"type": "auth", "token": 5, "id": "a1"})
    error = await client.recv()
    assert error["code"] == "auth_failed" and error["id"] == "a1", error
    assert await expect_close(client) == (1008, "auth failed")


async def test_client_that_obeys_retry_after_is_never_closed(stack: Stack) -> None:
    """Send as fast as allowed for longer than the abuse window needs to close a flooder,
    waiting exactly the announced ``retry_after`` after each refusal."""
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    client: WsClient = await connect(stack.ws_url, user.access_token)
    limited = 0
    answered = 0
    deadline = time.monotonic() + 7.0
    seen_retry_after: set[float] = set()
    while time.monotonic() < deadline:
        answer = await client.request({"type": "ping"})
        if answer["type"] == "pong":
            answered += 1
            continue
        assert answer["code"] == "rate_limited", answer
        retry_after = answer["retry_after"]
        assert retry_after >= 0.01 and round(retry_after * 100) == pytest.approx(retry_after * 100)
        seen_retry_after.add(retry_after)
        limited += 1
        await asyncio.sleep(retry_after)
    assert limited >= 20, (limited, answered)  # it really was held at the limit
    assert answered >= 100
    assert (await client.request({"type": "ping"}))["type"] in ("pong", "error")
    assert not client.conn.close_code, client.conn.close_reason
    await client.close()


async def test_flooder_is_still_closed_for_abuse(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    client = await connect(stack.ws_url, user.access_token)
    for n in range(300):
        await client.conn.send(json.dumps({"type": "ping", "id": n}))
    assert await expect_close(client, timeout=10) == (1008, "rate limit abuse")
