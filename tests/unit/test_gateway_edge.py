"""gateway.edge as pure logic: the pending-socket caps, the body limit's decisions and the
defaults every deployment gets (docs/security.md lists them)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.config import Settings
from gateway.edge import BodyLimit, PendingSockets, http_protocol_class, lingers


def test_defaults_bound_every_edge_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HEADER_TIMEOUT",
        "MAX_BODY_BYTES",
        "BODY_TIMEOUT",
        "MAX_PENDING_PER_ADDRESS",
        "MAX_PENDING",
    ):
        monkeypatch.delenv(f"NATTER_GATEWAY_{name}", raising=False)
    monkeypatch.delenv("NATTER_GATEWAY_FORWARDED_ALLOW_IPS", raising=False)
    settings = Settings()
    assert settings.header_timeout == 10.0 and settings.body_timeout == 30.0
    assert settings.max_body_bytes == 64 * 1024
    assert (settings.max_pending_per_address, settings.max_pending) == (50, 2000)
    assert settings.forwarded_allow_ips == ""  # natter up trusts no proxy


def test_pending_sockets_cap_per_address_and_in_all() -> None:
    pending = PendingSockets(per_address=2, total=3)
    assert pending.admit("a") and pending.admit("a") and not pending.admit("a")
    assert pending.admit("b") and not pending.admit("c")  # the total cap
    pending.release("a")
    assert pending.admit("c") and not pending.admit("a")
    for address in ("a", "b", "c", "never-admitted"):
        pending.release(address)
    pending.release("a")
    assert pending.count == 0 and pending.by_address == {}


def test_the_header_deadline_protocol_is_built_on_this_uvicorn() -> None:
    protocol = http_protocol_class(3.0, 5.0)
    assert not isinstance(protocol, str), "uvicorn's httptools protocol lost a hook natter relies on"
    assert protocol.deadline_seconds == 3.0 and protocol.linger_for == 5.0
    assert lingers()


async def _call(
    limit: BodyLimit, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, bytes]:
    """Run ``limit`` on a request made of ``messages``; (status, body, body the route saw)."""
    queue = list(messages)
    sent: list[dict[str, Any]] = []
    seen = bytearray()

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def route(scope: Any, receive_: Any, send_: Any) -> None:
        while True:
            message = await receive_()
            seen.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send_({"type": "http.response.start", "status": 200, "headers": []})
        await send_({"type": "http.response.body", "body": b"ok"})

    limit.app = route
    scope = {"type": "http", "path": "/api/auth/login", "headers": headers}
    await limit(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), bytes(seen)


async def test_body_limit_passes_small_bodies_and_refuses_large_or_slow_ones() -> None:
    limit = BodyLimit(lambda *a: None, max_bytes=10, timeout=0.2, limits={"/api/upload": 100})  # type: ignore[arg-type]
    chunks = [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.request", "body": b"678"},
    ]
    assert await _call(limit, chunks, []) == (200, b"ok", b"12345678")
    status, body, seen = await _call(
        limit, [{"type": "http.request", "body": b"x"}], [(b"content-length", b"11")]
    )
    assert status == 413 and json.loads(body)["code"] == "payload_too_large" and seen == b""
    big = [{"type": "http.request", "body": b"x" * 6, "more_body": True}] * 3
    status, body, seen = await _call(limit, big, [])
    assert status == 413 and seen == b""
    slow = [{"type": "http.request", "body": b"x", "more_body": True}]
    status, body, seen = await _call(limit, slow, [])
    assert status == 408 and json.loads(body)["code"] == "request_timeout" and seen == b""
    assert limit.limit_for("/api/upload/x") == 100 and limit.limit_for("/api/other") == 10
