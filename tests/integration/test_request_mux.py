"""The request mux and JetStream publish over it, against a real nats-server."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from shared.request_mux import mux_for
from shared.stream_reader import direct_batch, direct_get, kv_entry
from shared.streams import publish_acked
from tests.support import unique_name


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


async def test_request_many_collects_replies_until_the_last_and_times_out(nc: Client) -> None:
    subject = unique_name("stream")

    async def several(msg: Msg) -> None:
        for n in range(int(msg.data)):
            await nc.publish(msg.reply, str(n).encode())
        await nc.publish(msg.reply, b"end", headers={"Status": "204"})

    await nc.subscribe(subject, cb=several)
    mux = mux_for(nc)

    def is_end(msg: Msg) -> bool:
        return bool(msg.headers and msg.headers.get("Status"))

    replies = await mux.request_many(subject, b"3", timeout=5, last=is_end)
    assert [r.data for r in replies] == [b"0", b"1", b"2", b"end"]
    with pytest.raises(NatsTimeoutError):
        await mux.request_many(subject, b"2", timeout=0.3, last=lambda msg: msg.data == b"never")
    assert mux.waiting == 0


async def test_direct_batch_reads_a_subject_in_order(nc: Client) -> None:
    stream = unique_name("D").upper().replace("-", "_")
    await nc.jetstream().add_stream(
        StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"], allow_direct=True)
    )
    for n in range(5):
        await publish_acked(nc, f"{stream.lower()}.{'a' if n % 2 == 0 else 'b'}", str(n).encode(), timeout=5)
    a = await direct_batch(nc, stream, subject=f"{stream.lower()}.a", start_seq=1, batch=10)
    assert [(m.stream_seq, m.data) for m in a] == [(1, b"0"), (3, b"2"), (5, b"4")]
    two = await direct_batch(nc, stream, subject=f"{stream.lower()}.a", start_seq=2, batch=1)
    assert [m.data for m in two] == [b"2"]
    assert await direct_batch(nc, stream, subject=f"{stream.lower()}.zzz", start_seq=1, batch=5) == []
    assert (await direct_get(nc, stream, last_by_subject=f"{stream.lower()}.b")).data == b"3"  # type: ignore[union-attr]
    assert await direct_get(nc, stream, last_by_subject=f"{stream.lower()}.zzz") is None


async def test_kv_entry_reads_current_values_and_hides_removed_keys(nc: Client) -> None:
    bucket = unique_name("b").replace("-", "_")
    kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket=bucket, history=1, direct=True))
    first = await kv.put("k", b"v1")
    second = await kv.put("k", b"v2")
    entry = await kv_entry(nc, bucket, "k")
    assert entry is not None and (entry.data, entry.stream_seq) == (b"v2", second)
    assert second > first
    assert await kv_entry(nc, bucket, "missing") is None
    await kv.delete("k")
    assert await kv_entry(nc, bucket, "k") is None
    await kv.put("p", b"x")
    await kv.purge("p")
    assert await kv_entry(nc, bucket, "p") is None
