"""Logins cannot be used to lock someone out, and a client cannot choose its address (issue 10,
item 6; OWASP Authentication Cheat Sheet; PROTOCOL.md section 6).

Through the real gateway over HTTP. Requests come from distinct loopback addresses
(``127.0.0.x`` source binding), the way different machines would, so each test has its own
throttling counters.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats

from shared import subjects
from tests.conftest import Stack
from tests.support import kv_keys, register, unique_name

_octets = itertools.count(10)


def fresh_loopback() -> str:
    """A loopback address no other test in this session uses (127.0.0.10, .11, ...)."""
    n = next(_octets)
    return f"127.0.{n // 250}.{n % 250 + 2}"


@asynccontextmanager
async def client_from(stack: Stack, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=stack.base_url, transport=transport, timeout=30) as http:
        yield http


async def login(http: httpx.AsyncClient, username: str, password: str, **headers: str) -> httpx.Response:
    return await http.post(
        "/api/auth/login", json={"username": username, "password": password}, headers=headers
    )


async def failure_keys(stack: Stack) -> set[str]:
    nc = await nats.connect(stack.nats.url)
    try:
        kv = await nc.jetstream().key_value(subjects.KV_LOGIN_FAILURES)
        return set(await kv_keys(kv))
    finally:
        await nc.close()


async def test_x_forwarded_for_is_not_believed_from_an_unconfigured_peer(stack: Stack) -> None:
    """natter up trusts no proxy: a forged X-Forwarded-For from 127.0.0.1 (uvicorn's default
    trusted host) must not become the address the failure is counted against."""
    forged = "203.0.113.77"
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
        response = await login(http, user.username, "wrong password", **{"X-Forwarded-For": forged})
        assert response.status_code == 401
    keys = await failure_keys(stack)
    assert f"ip.{forged.replace('.', '_')}" not in keys, "the forged address was believed"
    assert f"ua.{user.username.lower()}.127_0_0_1" in keys, sorted(k for k in keys if user.username in k)


async def test_wrong_passwords_from_one_address_never_lock_the_owner_out(stack: Stack) -> None:
    attacker, owner = fresh_loopback(), fresh_loopback()
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    statuses = []
    async with client_from(stack, attacker) as http:
        for _ in range(8):
            statuses.append((await login(http, user.username, "wrong password")).status_code)
            await asyncio.sleep(0.05)
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:], statuses
    async with client_from(stack, owner) as http:  # the owner, elsewhere: not held back at all
        response = await login(http, user.username, user.password)
        assert response.status_code == 200, response.text
    async with client_from(stack, attacker) as http:  # even from there, at most a minute
        response = await login(http, user.username, user.password)
        deadline = time.monotonic() + 61
        while response.status_code == 429:
            wait = int(response.headers["Retry-After"])
            assert 1 <= wait <= 60 and time.monotonic() + wait < deadline, wait
            await asyncio.sleep(wait + 0.1)
            response = await login(http, user.username, user.password)
        assert response.status_code == 200, response.text


async def test_registration_is_throttled_per_address_over_http(stack: Stack) -> None:
    flooder, other = fresh_loopback(), fresh_loopback()
    started = time.monotonic()
    async with client_from(stack, flooder) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    "/api/auth/register", json={"username": unique_name(), "password": "correct horse 1"}
                )
                for _ in range(130)
            )
        )
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 429}, statuses
    # the address's bucket: a burst of 100, then 2 a second (auth_service defaults)
    assert statuses.count(429) >= 1 and statuses.count(201) <= 100 + math.ceil(2 * elapsed), (
        elapsed,
        statuses,
    )
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["code"] == "rate_limited"
    async with client_from(stack, other) as http:
        ok = await http.post(
            "/api/auth/register", json={"username": unique_name(), "password": "correct horse 1"}
        )
        assert ok.status_code == 201


async def test_refresh_reuse_interval_over_http(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
        first = await http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
        assert first.status_code == 200
        pair: dict[str, Any] = first.json()
        # a lost answer, or a second tab: the same token again within 5 s gives the same pair
        again = await asyncio.gather(
            *(http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token}) for _ in range(3))
        )
        assert [r.status_code for r in again] == [200, 200, 200]
        assert all(r.json() == pair for r in again)
        me = await http.get("/api/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 200
        await asyncio.sleep(5.3)
        late = await http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
        assert late.status_code == 401  # reuse after the interval revokes the whole session
        dead = await http.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert dead.status_code == 401, json.dumps(dead.json())
