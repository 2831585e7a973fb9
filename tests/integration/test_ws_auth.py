"""PROTOCOL.md section 2 through a real gateway: three ways to authenticate, refresh, expiry,
revocation, Origin, and what happens to unauthenticated sockets."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import Stack
from tests.support import WsClient, connect, expect_close, register


async def test_query_token_auth_success_then_summary(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    conn = await websockets.connect(f"{stack.ws_url}?token={user.access_token}")
    client = WsClient(conn)
    success = await client.recv()
    assert success["type"] == "auth_success"
    assert success["user_id"] == user.user_id and success["username"] == user.username
    assert isinstance(success["session_id"], str) and success["session_id"]
    assert success["expires_at"] > time.time() + 600
    assert success["protocol"] == 2  # PROTOCOL.md's preamble: v2 counts every room event in seq
    summary = await client.recv()
    assert summary["type"] == "notifications"
    assert isinstance(summary["unread"], int) and isinstance(summary["items"], list)
    await client.close()


async def test_header_auth(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    conn = await websockets.connect(
        stack.ws_url, additional_headers={"Authorization": f"Bearer {user.access_token}"}
    )
    client = WsClient(conn)
    assert (await client.recv())["type"] == "auth_success"
    assert (await client.recv())["type"] == "notifications"
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    await client.close()


async def test_first_message_auth_with_ping_before(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    client = await connect(stack.ws_url)
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"
    answer = await client.request({"type": "auth", "token": user.access_token})
    assert answer["type"] == "auth_success" and answer["user_id"] == user.user_id
    assert answer["protocol"] == 2
    assert (await client.recv())["type"] == "notifications"
    await client.close()


async def test_bad_token_is_auth_failed_and_1008(stack: Stack) -> None:
    client = await connect(stack.ws_url)
    await client.send({"type": "auth", "token": "not.a.jwt"})
    error = await client.recv()
    assert error["type"] == "error" and error["code"] == "auth_failed"
    code, _ = await expect_close(client)
    assert code == 1008


async def test_query_token_garbage_is_refused(stack: Stack) -> None:
    conn = await websockets.connect(f"{stack.ws_url}?token=eyJhbGciOiJub25lIn0.e30.")
    client = WsClient(conn)
    error = await client.recv()
    assert error["code"] == "auth_failed"
    assert (await expect_close(client))[0] == 1008


async def test_frame_before_auth_is_auth_required(stack: Stack) -> None:
    client = await connect(stack.ws_url)
    await client.send({"type": "join", "room": "general"})
    error = await client.recv()
    assert error["type"] == "error" and error["code"] == "auth_required"
    code, _ = await expect_close(client)
    assert code == 1008


async def test_no_auth_within_deadline_is_auth_timeout(stack: Stack) -> None:
    client = await connect(stack.ws_url)
    started = time.monotonic()
    error = await client.recv(timeout=15)
    assert error["code"] == "auth_timeout"
    assert 9 <= time.monotonic() - started <= 13
    assert (await expect_close(client))[0] == 1008


async def test_refresh_on_live_socket_and_other_users_token(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice = await register(http)
        bob = await register(http)
        refreshed = (await http.post("/api/auth/refresh", json={"refresh_token": alice.refresh_token})).json()
    client = await connect(stack.ws_url, alice.access_token)
    answer = await client.request({"type": "auth", "token": refreshed["access_token"]})
    assert answer["type"] == "auth_success" and answer["user_id"] == alice.user_id
    forbidden = await client.request({"type": "auth", "token": bob.access_token})
    assert forbidden["type"] == "error" and forbidden["code"] == "forbidden"
    answer = await client.request({"type": "ping"})
    assert answer["type"] == "pong"
    await client.close()


async def test_foreign_origin_is_refused(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(stack.ws_url, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    same = await websockets.connect(stack.ws_url, origin=stack.base_url)
    await same.close()


async def test_logout_all_closes_every_socket_within_2s(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
        second = (
            await http.post("/api/auth/login", json={"username": user.username, "password": user.password})
        ).json()
        first = await connect(stack.ws_url, user.access_token)
        other = await connect(stack.ws_url, second["access_token"])
        response = await http.post(
            "/api/auth/logout", json={"refresh_token": user.refresh_token, "all": True}
        )
        assert response.status_code == 204
        started = time.monotonic()
        results = await asyncio.gather(expect_close(first, 3), expect_close(other, 3))
        assert time.monotonic() - started < 2.5
        for code, reason in results:
            assert code == 1008 and reason == "session revoked"
        # The revoked access token no longer opens a socket.
        again = await websockets.connect(f"{stack.ws_url}?token={user.access_token}")
        error = WsClient(again)
        assert (await error.recv())["code"] == "auth_failed"
        # A fresh login works.
        fresh = await http.post(
            "/api/auth/login", json={"username": user.username, "password": user.password}
        )
        assert fresh.status_code == 200
        client = await connect(stack.ws_url, fresh.json()["access_token"])
        await client.close()


async def test_token_expiry_closes_1008(stack_factory) -> None:  # type: ignore[no-untyped-def]
    short = stack_factory({"NATTER_AUTH_ACCESS_TTL_SECONDS": "3"})
    async with httpx.AsyncClient(base_url=short.base_url) as http:
        user = await register(http)
    client = await connect(short.ws_url, user.access_token)
    error = await client.recv_type("error", timeout=10)
    assert error["code"] == "token_expired"
    code, reason = await expect_close(client)
    assert code == 1008 and reason == "token expired"


async def test_tokens_never_reach_the_gateway_log(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    client = await connect(stack.ws_url, user.access_token)
    await client.request({"type": "ping"})
    await client.close()
    # A refused handshake is logged with its path and query string (accepted ones are not,
    # above DEBUG): the token in it must be redacted.
    with pytest.raises(InvalidStatus):
        await websockets.connect(f"{stack.ws_url}?token={user.access_token}", origin="http://evil.example")
    await asyncio.sleep(0.3)
    log = (stack.tmp / "gateway-0.log").read_text()
    assert "/ws?token=" in log  # the refused handshake's line is there...
    assert user.access_token not in log  # ...with the token redacted
    assert user.access_token.split(".")[2] not in log
    assert user.password not in log
