"""The edge has limits (issue 10, item 7): header deadline, body limits, and caps on sockets that
have not authenticated, each tried with a bounded loopback client against a real gateway.

The stack here runs with short deadlines and small caps (its environment below) so the tests are
quick; the defaults are checked in tests/unit/test_gateway_config.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import Stack, isolated_stack
from tests.support import WsClient, connect, expect_close, register, unique_name

EDGE_ENV = {
    "NATTER_GATEWAY_HEADER_TIMEOUT": "2",
    "NATTER_GATEWAY_BODY_TIMEOUT": "2",
    "NATTER_GATEWAY_MAX_PENDING_PER_ADDRESS": "5",
    "NATTER_GATEWAY_MAX_CONNECTIONS": "3",
}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with isolated_stack(tmp_path_factory.mktemp("edge"), "edge", EDGE_ENV) as stack:
        yield stack


def port_of(stack: Stack) -> int:
    return stack.gateway_ports[0]


async def open_raw(
    stack: Stack, local: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port_of(stack), local_addr=(local, 0))


async def closed_by_server(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes
) -> float:
    """Trickle ``trickle`` a byte every 0.2 s until the server closes; seconds it took."""
    started = time.monotonic()
    for byte in trickle:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionError, OSError):
            return time.monotonic() - started
        try:
            data = await asyncio.wait_for(reader.read(1024), 0.2)
        except TimeoutError:
            continue
        if data == b"" or data.startswith(b"HTTP/1.1 4"):
            return time.monotonic() - started
    raise AssertionError("the server kept a trickled request open")


async def test_trickled_handshakes_are_closed_at_the_header_deadline(edge: Stack) -> None:
    conns = [await open_raw(edge) for _ in range(50)]
    head = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    for _, writer in conns:
        writer.write(head)
    trickle = b"Connection: Upgrade\r\n" * 10  # far more than the deadline lets through
    took = await asyncio.gather(*(closed_by_server(r, w, trickle) for r, w in conns))
    assert max(took) < 2 + 1.5, took
    for _, writer in conns:
        writer.close()
    # the gateway is fine: a normal request and a normal socket still work
    async with httpx.AsyncClient(base_url=edge.base_url) as http:
        assert (await http.get("/health")).status_code == 200
        user = await register(http)
    client = await connect(edge.ws_url, user.access_token)
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    await client.close()


async def test_a_silent_connection_is_closed_at_the_header_deadline(edge: Stack) -> None:
    reader, writer = await open_raw(edge)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(1024), 6) == b""
    assert time.monotonic() - started < 2 + 1.5
    writer.close()


async def test_an_oversized_body_is_refused_without_being_read(edge: Stack) -> None:
    reader, writer = await open_raw(edge)
    writer.write(
        b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 52428800\r\n\r\n{"username":'
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert b"payload_too_large" in await asyncio.wait_for(reader.readexactly(length), 5)
    # the gateway then reads and drops the announced body, but not for longer than a body may
    # take (NATTER_GATEWAY_BODY_TIMEOUT, 2 s here), however slowly it comes
    answered = time.monotonic()
    took = await closed_by_server(reader, writer, b"x" * 40)
    assert 1.5 < time.monotonic() - answered < 2 + 1.5, took
    writer.close()
    # a chunked body with no length is cut off as soon as it passes 64 KiB
    reader, writer = await open_raw(edge)
    writer.write(
        b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 16384
    answer = b""
    for _ in range(64):  # up to 1 MiB; the answer must come long before
        try:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        except (ConnectionError, OSError):
            break
        try:
            answer = await asyncio.wait_for(reader.read(4096), 0.05)
        except TimeoutError:
            continue
        if answer:
            break
    answer = answer or await asyncio.wait_for(reader.read(4096), 5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    writer.close()
    async with httpx.AsyncClient(base_url=edge.base_url) as http:  # small bodies are fine
        response = await http.post("/api/auth/login", json={"username": "nobody_here", "password": "x" * 10})
        assert response.status_code == 401


async def test_a_client_that_sends_its_whole_body_before_reading_gets_the_413(edge: Stack) -> None:
    """httpx, like browsers' ``fetch``, writes a whole body before reading the answer: the
    gateway answers 413 early, then reads and drops the rest instead of closing on unread bytes
    (which would reset the connection and lose the answer), and the connection stays usable."""
    connects = 0

    async def count(request: httpx.Request) -> None:
        nonlocal connects
        if request.extensions.get("trace") is None:
            request.extensions["trace"] = on_trace

    async def on_trace(event: str, info: dict[str, object]) -> None:
        nonlocal connects
        connects += event == "connection.connect_tcp.complete"

    hooks = {"request": [count]}
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=30, event_hooks=hooks) as http:
        user = await register(http)
        room = unique_name("big")
        auth = {"Authorization": f"Bearer {user.access_token}"}
        assert (await http.post("/api/rooms", json={"name": room}, headers=auth)).status_code == 201
        assert connects == 1
        json_type = {"content-type": "application/json"}
        for size in (70_000, 8 * 1024 * 1024):  # JSON routes take 64 KiB
            body = b"{" + b" " * size + b"}"
            refused = await http.post("/api/auth/login", content=body, headers=json_type)
            assert refused.status_code == 413 and refused.json()["code"] == "payload_too_large"
        upload = {"file": ("big.txt", b"a" * (11 * 1024 * 1024), "text/plain")}  # uploads take 10 MiB
        refused = await http.post(f"/api/rooms/{room}/attachments", files=upload, headers=auth)
        assert refused.status_code == 413 and refused.json()["code"] == "payload_too_large"
        assert (await http.get("/health")).status_code == 200
        assert connects == 1  # every refusal left the connection usable for the next request


async def test_a_slow_body_is_refused_with_408(edge: Stack) -> None:
    reader, writer = await open_raw(edge)
    writer.write(b'POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"user')
    await writer.drain()
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(4096), 6)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 1.5 < time.monotonic() - started < 4
    writer.close()


async def _ws(stack: Stack, local: str, token: str | None = None) -> WsClient:
    url = f"{stack.ws_url}?token={token}" if token else stack.ws_url
    conn = await websockets.connect(url, open_timeout=5, local_addr=(local, 0))
    client = WsClient(conn)
    if token:
        assert (await client.recv())["type"] == "auth_success"
        await client.recv()  # the notifications summary
    return client


async def test_unauthenticated_sockets_are_capped_per_address_and_do_not_fill_the_gateway(
    edge: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=edge.base_url) as http:
        users = [await register(http) for _ in range(3)]
    hoarder = [await _ws(edge, "127.0.0.21") for _ in range(5)]  # the cap: 5 per address
    extra = await _ws(edge, "127.0.0.21")
    assert await expect_close(extra) == (1013, "too many unauthenticated sockets")
    for client in hoarder:  # still open: each just has its auth deadline
        assert (await client.request({"type": "ping"}))["type"] == "pong"
    # max_connections (3) counts authenticated sockets only: the 5 pending ones take no slot
    members = [await _ws(edge, "127.0.0.22", user.access_token) for user in users]
    over = await websockets.connect(
        f"{edge.ws_url}?token={users[0].access_token}", local_addr=("127.0.0.23", 0)
    )
    full = WsClient(over)
    frames = []
    with pytest.raises(ConnectionClosed):
        while True:
            frames.append(await full.recv())
    assert over.close_code == 1013 and over.close_reason == "gateway full", frames
    assert frames == []  # refused before auth_success
    # once a pending socket authenticates (or leaves), its address may open another
    await hoarder[0].close()
    again = await _ws(edge, "127.0.0.21")
    assert (await again.request({"type": "ping"}))["type"] == "pong"
    for client in [*hoarder[1:], again, *members]:
        await client.close()
