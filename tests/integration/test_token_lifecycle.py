"""Tokens have a life cycle (issue 10, item 9): service tokens never chat and can be listed and
revoked (every gateway refuses a revoked one within 2 s), signing keys rotate without breaking a
token in flight, and a password change ends every other session.

The operator's commands run as the operator runs them (``python -m natter ...`` with the
operator's NATS login); the stack has two gateways.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.nats_auth import OPERATOR
from tests.conftest import Stack, isolated_stack
from tests.support import WsClient, connect, expect_close, register, service_token, unique_name


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with isolated_stack(tmp_path_factory.mktemp("tokens"), "tokens", gateways=2) as stack:
        yield stack


def natter(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m natter ARGS`` as the operator of ``stack``."""
    env = {
        **os.environ,
        "NATS_URL": stack.nats.client_url,
        "NATTER_NATS_USER": OPERATOR,
        "NATTER_NATS_PASSWORD": stack.nats.credentials.passwords[OPERATOR],
    }
    return subprocess.run(
        [sys.executable, "-m", "natter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def header_kid(token: str) -> str:
    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


def claims_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def gateway_urls(stack: Stack) -> list[str]:
    return [f"http://127.0.0.1:{port}" for port in stack.gateway_ports]


async def broadcast(base_url: str, token: str) -> int:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/notifications/broadcast",
            json={"title": "t", "message": "m"},
            headers={"Authorization": f"Bearer {token}"},
        )
    return response.status_code


async def test_a_service_token_cannot_open_a_chat_socket(two: Stack) -> None:
    token = await service_token(two.nats.url, name=unique_name("svc"))
    client = await connect(two.ws_url, token, expect_auth=False)
    error = await client.recv()
    assert error["type"] == "error" and error["code"] == "auth_failed", error
    assert await expect_close(client) == (1008, "auth failed")
    later = await connect(two.ws_url)  # nor by the auth frame
    answer = await later.request({"type": "auth", "token": token})
    assert answer["code"] == "auth_failed"
    assert await expect_close(later) == (1008, "auth failed")


async def test_service_tokens_are_listed_and_revoked_on_every_gateway_within_2s(two: Stack) -> None:
    name = unique_name("svc")
    minted = natter(two, "service-token", name)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    jti = claims_of(token)["jti"]
    for url in gateway_urls(two):
        assert await broadcast(url, token) == 202
    listing = natter(two, "service-token", "--list")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith(jti))
    assert f"\t{name}\tservice\t" in row and row.endswith("\t-")  # not revoked
    revoked = natter(two, "service-token", "--revoke", jti)
    assert revoked.returncode == 0 and jti in revoked.stdout, revoked.stderr
    started = time.monotonic()
    pending = set(gateway_urls(two))
    while pending:
        for url in list(pending):
            if await broadcast(url, token) == 401:
                pending.discard(url)
        assert time.monotonic() - started < 2.0, f"still accepted by {pending}"
        await asyncio.sleep(0.05)
    listing = natter(two, "service-token", "--list")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(jti))
    assert not row.endswith("\t-")
    other = await service_token(two.nats.url, name=unique_name("svc"))  # others keep working
    assert await broadcast(gateway_urls(two)[1], other) == 202
    unknown = natter(two, "service-token", "--revoke", "0" * 32)
    assert unknown.returncode == 1 and "No such service token" in unknown.stderr


async def test_signing_keys_rotate_and_old_tokens_keep_verifying(two: Stack) -> None:
    async with httpx.AsyncClient(base_url=two.base_url) as http:
        before = await register(http)
        old_kid = header_kid(before.access_token)
        old_service = await service_token(two.nats.url, name=unique_name("svc"))
        rotated = natter(two, "rotate-keys")
        assert rotated.returncode == 0, rotated.stderr
        assert "verifies until" in rotated.stdout and old_kid in rotated.stdout
        after = await register(http)
        new_kid = header_kid(after.access_token)
        assert new_kid != old_kid
        kids = [key["kid"] for key in (await http.get("/.well-known/jwks.json")).json()["keys"]]
        assert kids[0] == new_kid and old_kid in kids
    for url in gateway_urls(two):  # both tokens verify on every gateway
        async with httpx.AsyncClient(base_url=url) as http:
            for user in (before, after):
                me = await http.get("/api/me", headers={"Authorization": f"Bearer {user.access_token}"})
                assert me.status_code == 200, (url, me.text)
        assert await broadcast(url, old_service) == 202
    old_socket = await connect(two.ws_url, before.access_token)
    assert (await old_socket.request({"type": "ping"}))["type"] == "pong"
    await old_socket.close()


async def test_changing_the_password_ends_every_other_session(two: Stack) -> None:
    async with httpx.AsyncClient(base_url=two.base_url) as http:
        user = await register(http)
        laptop = await connect(two.ws_url, user.access_token)
        phone = (
            await http.post("/api/auth/login", json={"username": user.username, "password": user.password})
        ).json()
        wrong = await http.post(
            "/api/auth/password",
            json={"current_password": "not my password", "new_password": "a new password 1"},
            headers={"Authorization": f"Bearer {phone['access_token']}"},
        )
        assert wrong.status_code == 401
        changed = await http.post(
            "/api/auth/password",
            json={"current_password": user.password, "new_password": "a new password 1"},
            headers={"Authorization": f"Bearer {phone['access_token']}"},
        )
        assert changed.status_code == 200, changed.text
        fresh = changed.json()
        assert await expect_close(laptop, timeout=3) == (1008, "session revoked")
        for token in (user.refresh_token, phone["refresh_token"]):
            assert (await http.post("/api/auth/refresh", json={"refresh_token": token})).status_code == 401
        for token in (user.access_token, phone["access_token"]):
            assert (
                await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            ).status_code == 401
        me = await http.get("/api/me", headers={"Authorization": f"Bearer {fresh['access_token']}"})
        assert me.status_code == 200
        assert (
            await http.post("/api/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
        ).status_code == 200
        old = await http.post("/api/auth/login", json={"username": user.username, "password": user.password})
        assert old.status_code == 401
        new = await http.post(
            "/api/auth/login", json={"username": user.username, "password": "a new password 1"}
        )
        assert new.status_code == 200
    socket: WsClient = await connect(two.ws_url, fresh["access_token"])
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    await socket.close()
