"""The request mux and JetStream publish over it, against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from shared.request_mux import mux_for
from shared.streams import publish_acked
from tests.conftest import NatsServer
from tests.support import unique_name


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def test_concurrent_requests_each_get_their_own_reply(nc: Client) -> None:
    subject = unique_name("echo")

    async def echo(msg: Msg) -> None:
        await asyncio.sleep(0.001 * (int(msg.data) % 7))  # replies come back out of order
        await msg.respond(b"re:" + msg.data + (msg.headers or {}).get("X-Tag", "").encode())

    await nc.subscribe(subject, cb=echo)
    mux = mux_for(nc)
    assert mux_for(nc) is mux
    replies = await asyncio.gather(
        *(mux.request(subject, str(n).encode(), timeout=5, headers={"X-Tag": f"/{n}"}) for n in range(200))
    )
    assert [r.data for r in replies] == [f"re:{n}/{n}".encode() for n in range(200)]
    assert mux.waiting == 0


async def test_no_responders_and_timeout_raise_nats_errors(nc: Client) -> None:
    mux = mux_for(nc)
    with pytest.raises(NoRespondersError):
        await mux.request(unique_name("nobody"), b"x", timeout=2)
    silent = unique_name("silent")

    async def ignore(msg: Msg) -> None:
        return None

    await nc.subscribe(silent, cb=ignore)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NatsTimeoutError):
        await mux.request(silent, b"x", timeout=0.2)
    assert 0.15 <= loop.time() - started < 2
    assert mux.waiting == 0


async def test_publish_acked_reports_seq_duplicates_and_refusals(nc: Client) -> None:
    stream = unique_name("S").upper().replace("-", "_")
    subject = f"{stream.lower()}.room"
    await nc.jetstream().add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    first = await publish_acked(nc, subject, b"one", timeout=5, headers={"Nats-Msg-Id": "m1"})
    assert (first.stream, first.seq, bool(first.duplicate)) == (stream, 1, False)
    again = await publish_acked(nc, subject, b"one", timeout=5, headers={"Nats-Msg-Id": "m1"})
    assert (again.seq, again.duplicate) == (1, True)
    with pytest.raises(APIError) as stale:
        await publish_acked(
            nc, subject, b"two", timeout=5, headers={"Nats-Expected-Last-Subject-Sequence": "0"}
        )
    assert stale.value.err_code == 10071
    with pytest.raises(NoStreamResponseError):
        await publish_acked(nc, unique_name("nostream"), b"x", timeout=2)
