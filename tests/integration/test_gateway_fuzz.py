"""CI fuzzes the real gateway (issue 10, item 11): at least 2,000 hypothesis-generated frames per
run against a live stack, from authenticated sockets and from sockets that never authenticate.

Asserted: no unexpected close (an authenticated socket stays open through everything), never an
``internal`` error and every ``validation_error`` with ``details``, no effect on a control user
who keeps sending meanwhile (every message acked to it is delivered to it and in history, in
order), and no gateway restart (same process, same gateway id, uptime only grows).

The stack's rate limit is raised: the limit is tested elsewhere, here it would only slow the
fuzzer down. ``benchmarks/fuzz_gateway.py`` runs the same strategies for 10,000+ frames against
any running stack (``natter up``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from tests.conftest import Stack, isolated_stack
from tests.fuzz_frames import check_answer, raw_frames
from tests.support import User, WsClient, connect, join, register, unique_name

FUZZ_ENV = {"NATTER_GATEWAY_RATE_PER_SECOND": "5000", "NATTER_GATEWAY_RATE_BURST": "5000"}
BATCH = 50
BATCHES = 42  # 2,100 frames from authenticated sockets
UNAUTHENTICATED_BATCHES = 10


class Fuzzed:
    """The stack under fuzz, its users and what the control user was told."""

    def __init__(self, stack: Stack, fuzzer: User, control: User, room: str) -> None:
        self.stack = stack
        self.fuzzer = fuzzer
        self.control = control
        self.room = room
        self.acked: list[int] = []
        self.frames_sent = 0
        self.health: dict[str, Any] = {}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    with isolated_stack(tmp_path_factory.mktemp("fuzz"), "fuzz", FUZZ_ENV) as stack:

        async def users() -> tuple[User, User]:
            async with httpx.AsyncClient(base_url=stack.base_url) as http:
                return await register(http), await register(http)

        fuzzer, control = asyncio.run(users())
        state = Fuzzed(stack, fuzzer, control, unique_name("fz"))
        state.health = httpx.get(f"{stack.base_url}/health").json()
        yield state


async def _drain_until_pong(client: WsClient, marker: str) -> list[dict[str, Any]]:
    """Everything the socket got up to the answer to ping ``marker`` (frames are handled in
    arrival order, so every earlier frame's answer came before it)."""
    got: list[dict[str, Any]] = []
    while True:
        frame = await client.recv(timeout=30)
        if frame.get("type") == "pong" and frame.get("id") == marker:
            return got
        got.append(frame)


async def _control_chatter(state: Fuzzed, stop: asyncio.Event) -> None:
    """The control user sends while the fuzzer runs; each acked message must reach its socket."""
    client = await connect(state.stack.ws_url, state.control.access_token)
    acked: list[int] = []
    try:
        await join(client, state.room)
        while not stop.is_set():
            ack = await client.request(
                {"type": "chat_message", "room": state.room, "message": f"control {len(state.acked)}"}
            )
            assert ack["type"] == "ack", ack
            acked.append(ack["seq"])
            state.acked.append(ack["seq"])
            await asyncio.sleep(0.02)
        delivered = {
            f["data"]["seq"]
            for f in client.stash
            if f.get("type") == "message" and f["data"]["user_id"] == state.control.user_id
        }
        deadline = time.monotonic() + 5
        while not set(acked) <= delivered and time.monotonic() < deadline:
            frame = await client.recv(timeout=5)
            if frame.get("type") == "message" and frame["data"]["user_id"] == state.control.user_id:
                delivered.add(frame["data"]["seq"])
        assert set(acked) <= delivered, sorted(set(acked) - delivered)
        assert client.conn.close_code is None
    finally:
        await client.close()


async def _fuzz_batch(state: Fuzzed, texts: list[str]) -> None:
    client = await connect(state.stack.ws_url, state.fuzzer.access_token)
    stop = asyncio.Event()
    control = asyncio.create_task(_control_chatter(state, stop))
    try:
        await join(client, state.room)
        for text in texts:
            await client.conn.send(text)
        state.frames_sent += len(texts)
        marker = f"end-{state.frames_sent}"
        await client.send({"type": "ping", "id": marker})
        answers = await _drain_until_pong(client, marker)
        problems = [problem for frame in answers if (problem := check_answer(frame))]
        assert not problems, problems[:5]
        assert client.conn.close_code is None
    finally:
        stop.set()
        await control
        await client.close()


@settings(
    max_examples=BATCHES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_authenticated_sockets_survive_generated_frames(fuzzed: Fuzzed, data: st.DataObject) -> None:
    texts = data.draw(st.lists(raw_frames([fuzzed.room, "general"]), min_size=BATCH, max_size=BATCH))
    asyncio.run(_fuzz_batch(fuzzed, texts))


#: What an unauthenticated socket may be answered with, besides ``pong``.
PRE_AUTH_ERRORS = frozenset({"auth_required", "auth_failed", "rate_limited"})


async def _unauthenticated(state: Fuzzed, texts: list[str]) -> None:
    """Before auth: a ping is answered, anything else but a valid auth ends the socket with a
    close frame (1008, PROTOCOL.md section 2), never silently (1006) and never ``internal``."""
    for text in texts:
        conn = await websockets.connect(state.stack.ws_url, open_timeout=5)
        client = WsClient(conn)
        await conn.send(text)
        try:
            while True:
                frame = await client.recv(timeout=15)
                if frame.get("type") == "pong":
                    break
                assert frame.get("type") == "error" and frame.get("code") in PRE_AUTH_ERRORS, frame
        except ConnectionClosed:
            assert conn.close_code == 1008, (text[:200], conn.close_code, conn.close_reason)
        finally:
            await conn.close()
        state.frames_sent += 1


@settings(
    max_examples=UNAUTHENTICATED_BATCHES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_unauthenticated_sockets_are_answered_or_closed_1008(fuzzed: Fuzzed, data: st.DataObject) -> None:
    texts = data.draw(st.lists(raw_frames([fuzzed.room]), min_size=5, max_size=5))
    asyncio.run(_unauthenticated(fuzzed, texts))


def test_the_fuzzed_gateway_kept_its_promises(fuzzed: Fuzzed) -> None:
    """Runs after the fuzz tests in this module (and stands alone: it fuzzes a little itself)."""
    if fuzzed.frames_sent < BATCH:
        asyncio.run(_fuzz_batch(fuzzed, [json.dumps({"type": "dance"})] * BATCH))
    health = httpx.get(f"{fuzzed.stack.base_url}/health").json()
    assert health["status"] == "healthy"
    assert health["gateway_id"] == fuzzed.health["gateway_id"], "the gateway restarted"
    assert health["uptime"] > fuzzed.health["uptime"]
    assert fuzzed.stack.gateways[0].alive()

    async def control_history() -> list[int]:
        client = await connect(fuzzed.stack.ws_url, fuzzed.control.access_token)
        seqs: list[int] = []
        before: int | None = None
        while True:
            request: dict[str, Any] = {"type": "history", "room": fuzzed.room, "limit": 100}
            if before is not None:
                request["before"] = before
            page = await client.request(request)
            seqs[0:0] = [m["seq"] for m in page["messages"] if m["user_id"] == fuzzed.control.user_id]
            if not page["has_more"] or not page["messages"]:
                break
            before = page["messages"][0]["seq"]
        await client.close()
        return seqs

    assert fuzzed.acked, "the control user sent nothing"
    assert asyncio.run(control_history()) == sorted(fuzzed.acked)
