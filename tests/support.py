"""Client-side helpers for integration tests: real HTTP (httpx) and real WebSockets (websockets)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx
import nats.js.errors
import websockets
from websockets.asyncio.client import ClientConnection


def unique_name(prefix: str = "u") -> str:
    """A username/room-safe unique name: lowercase letters, digits, underscore; <= 32 chars."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass
class User:
    user_id: str
    username: str
    password: str
    access_token: str
    refresh_token: str


async def register(
    http: httpx.AsyncClient, username: str | None = None, password: str = "correct horse 1"
) -> User:
    """Register and log in a fresh user through the gateway's HTTP API."""
    username = username or unique_name()
    response = await http.post("/api/auth/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    response = await http.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return User(
        user_id=body["user_id"],
        username=body["username"],
        password=password,
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
    )


class WsClient:
    """A thin JSON wrapper over one real WebSocket connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        #: frames read while waiting for a request's answer, returned by later reads in order.
        self.stash: deque[dict[str, Any]] = deque()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.conn.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame: stashed ones first, then from the socket."""
        if self.stash:
            return self.stash.popleft()
        return await self._read(timeout)

    async def _read(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        assert isinstance(raw, str), raw
        return json.loads(raw)

    async def recv_type(self, frame_type: str, timeout: float = 5.0) -> dict[str, Any]:
        """Receive frames until one of ``frame_type`` arrives (others are skipped)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no {frame_type!r} frame within {timeout}s")
            frame = await self.recv(remaining)
            if frame.get("type") == frame_type:
                return frame

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``id`` and return the answer carrying that ``id``."""
        request_id = uuid.uuid4().hex[:16]
        await self.send({**frame, "id": request_id})
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {frame.get('type')!r}")
            answer = await self._read(remaining)
            if answer.get("id") == request_id:
                return answer
            self.stash.append(answer)

    async def close(self) -> None:
        await self.conn.close()


async def connect(
    ws_url: str, token: str | None = None, *, expect_auth: bool = True, **kwargs: Any
) -> WsClient:
    """Open a socket (``?token=`` when given); with ``expect_auth`` read ``auth_success`` and the
    ``notifications`` summary that follows it."""
    url = f"{ws_url}?token={token}" if token else ws_url
    conn = await websockets.connect(url, open_timeout=5, **kwargs)
    client = WsClient(conn)
    if token and expect_auth:
        first = await client.recv()
        assert first["type"] == "auth_success", first
        summary = await client.recv()
        assert summary["type"] == "notifications", summary
    return client


async def service_token(nats_url: str, name: str = "tests", role: str = "service") -> str:
    """Mint a service token the way ``natter service-token`` does: ``auth.service_token`` over NATS."""
    import nats

    from shared import subjects
    from shared.nats_client import request_json

    nc = await nats.connect(nats_url)
    try:
        reply = await request_json(nc, subjects.AUTH_SERVICE_TOKEN, {"name": name, "role": role}, timeout=5)
    finally:
        await nc.close()
    return str(reply["access_token"])


async def expect_close(client: WsClient, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """Read until the server closes; return (code, reason)."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await asyncio.wait_for(client.conn.recv(), timeout)
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, None)


async def join(client: WsClient, room: str, **extra: Any) -> dict[str, Any]:
    """Join ``room`` and return the ``joined`` answer (asserting it is one)."""
    answer = await client.request({"type": "join", "room": room, **extra})
    assert answer["type"] == "joined", answer
    return answer


async def members(base_url: str, ws_url: str, room: str, count: int) -> list[tuple[User, WsClient]]:
    """``count`` new users, each with one socket that joined ``room``, in that order."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        users = [await register(http) for _ in range(count)]
    joined: list[tuple[User, WsClient]] = []
    for user in users:
        client = await connect(ws_url, user.access_token)
        await join(client, room)
        joined.append((user, client))
    return joined


async def service_instances(
    nats_url: str, service: str, verb: str = "PING", wait: float = 0.5
) -> list[dict[str, Any]]:
    """Every reply to ``$SRV.<verb>.<service>`` (NATS service API discovery) arriving within
    ``wait`` seconds: one per running replica."""
    import time

    import nats

    nc = await nats.connect(nats_url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(f"$SRV.{verb}.{service}", b"", reply=inbox)
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                break
            replies.append(json.loads(msg.data))
        return replies
    finally:
        await nc.close()


async def kv_keys(kv: Any) -> list[str]:
    """The keys of KV bucket ``kv``; nats-py's ``keys()`` raises ``NoKeysError`` for an empty
    bucket (and, its watcher starting a moment early, sometimes for one just written)."""
    try:
        return list(await kv.keys())
    except nats.js.errors.NoKeysError:
        return []


async def requests_served(nats_url: str, service: str, subject: str) -> int:
    """Requests on ``subject`` that every running replica of ``service`` has answered (NATS
    service API ``STATS``)."""
    stats = await service_instances(nats_url, service, "STATS")
    return sum(e["num_requests"] for reply in stats for e in reply["endpoints"] if e["subject"] == subject)
