"""Direct-dispatch subscriptions (shared.direct_subscription) against a real nats-server."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import direct_subscription, fastpaths
from shared.direct_subscription import DirectDispatch, subscribe_direct
from tests.conftest import NatsServer
from tests.support import unique_name

pytestmark = pytest.mark.usefixtures("fast_paths_on")


async def _until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_messages_reach_the_handler_in_order_without_a_task(nc: Client) -> None:
    subject = unique_name("direct")
    got: list[bytes] = []
    sub = await subscribe_direct(nc, subject, lambda msg: got.append(msg.data))
    assert isinstance(sub._pending_queue, DirectDispatch)
    assert sub._wait_for_msgs_task is None  # no per-subscription task
    for n in range(500):
        await nc.publish(subject, str(n).encode())
    await nc.flush()
    await _until(lambda: len(got) == 500)
    assert got == [str(n).encode() for n in range(500)]
    assert sub.pending_msgs == 0 and sub._pending_size == 0


async def test_more_than_the_pending_byte_limit_is_never_a_slow_consumer(
    nats_server: NatsServer, nc: Client
) -> None:
    """nats.py counts bytes in and its own task counts them out; the dispatcher must too, or a
    long-lived subscription would start dropping messages once 64 MiB had passed through it."""
    subject = unique_name("direct-bytes")
    errors: list[Exception] = []
    client = await nats.connect(nats_server.url, error_cb=_collect(errors))
    try:
        count = 0

        def handler(msg: Msg) -> None:
            nonlocal count
            count += 1

        sub = await subscribe_direct(client, subject, handler)
        sub._pending_bytes_limit = 64 * 1024  # 16 messages' worth
        payload = b"x" * 4096
        for _ in range(200):  # 800 KiB through a 64 KiB limit
            await nc.publish(subject, payload)
        await nc.flush()
        await _until(lambda: count == 200)
        assert errors == []
        assert sub._pending_size == 0
    finally:
        await client.close()


async def test_a_failing_handler_is_logged_and_the_connection_keeps_reading(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    subject = unique_name("direct-fail")
    got: list[bytes] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise ValueError("bad message")
        got.append(msg.data)

    await subscribe_direct(nc, subject, handler)
    other = unique_name("direct-other")
    others: list[bytes] = []
    await subscribe_direct(nc, other, lambda msg: others.append(msg.data))
    for data in (b"1", b"boom", b"2"):
        await nc.publish(subject, data)
    await nc.publish(other, b"still reading")
    await nc.flush()
    await _until(lambda: len(got) == 2 and others)
    assert got == [b"1", b"2"]
    assert others == [b"still reading"]
    assert "bad message" in caplog.text or "failed" in caplog.text


async def test_unsubscribe_and_drain_stop_delivery(nats_server: NatsServer, nc: Client) -> None:
    subject = unique_name("direct-unsub")
    got: list[bytes] = []
    sub = await subscribe_direct(nc, subject, lambda msg: got.append(msg.data))
    await nc.publish(subject, b"before")
    await nc.flush()
    await _until(lambda: got == [b"before"])
    await sub.unsubscribe()
    await nc.publish(subject, b"after")
    await nc.flush()
    await asyncio.sleep(0.1)
    assert got == [b"before"]

    client = await nats.connect(nats_server.url)
    drained: list[bytes] = []
    await subscribe_direct(client, subject, lambda msg: drained.append(msg.data))
    await client.flush()
    await nc.publish(subject, b"x")
    await nc.flush()
    await _until(lambda: drained == [b"x"])
    await asyncio.wait_for(client.drain(), 5)  # joins the dispatcher, then closes
    assert client.is_closed


async def test_queue_groups_share_the_messages(nc: Client) -> None:
    subject = unique_name("direct-queue")
    first: list[bytes] = []
    second: list[bytes] = []
    await subscribe_direct(nc, subject, lambda msg: first.append(msg.data), queue="workers")
    await subscribe_direct(nc, subject, lambda msg: second.append(msg.data), queue="workers")
    for n in range(100):
        await nc.publish(subject, str(n).encode())
    await nc.flush()
    await _until(lambda: len(first) + len(second) == 100)
    assert sorted(first + second, key=int) == [str(n).encode() for n in range(100)]


async def test_a_subscription_costs_a_fraction_of_a_callback_one(nc: Client) -> None:
    """What the module exists for: no queue and no task per subscription (tracemalloc)."""

    async def callback(msg: Msg) -> None:
        return None

    async def cost(direct: bool) -> float:
        subs = []
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for n in range(300):
            subject = unique_name(f"mem{n}")
            if direct:
                subs.append(await subscribe_direct(nc, subject, lambda msg: None))
            else:
                subs.append(await nc.subscribe(subject, cb=callback))
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        for sub in subs:
            await sub.unsubscribe()
        return grown / len(subs)

    callback_bytes = await cost(direct=False)
    direct_bytes = await cost(direct=True)
    assert direct_bytes < callback_bytes / 2, (direct_bytes, callback_bytes)


async def test_without_the_internals_it_falls_back_to_a_callback_subscription(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct_subscription, "_INTERNALS", ("_an_attribute_nats_py_does_not_have",))
    await assert_a_working_callback_subscription(nc)  # and the probe subscription was removed


async def test_with_the_fast_path_off_it_is_a_callback_subscription(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATTER_FAST_PATHS", "off")
    fastpaths.reset()
    await assert_a_working_callback_subscription(nc)


async def assert_a_working_callback_subscription(nc: Client) -> None:
    """subscribe_direct gave nats.py's own callback subscription (a task, a queue), which
    delivers in order, and it is the connection's only subscription."""
    subject = unique_name("direct-fallback")
    got: list[bytes] = []
    sub = await subscribe_direct(nc, subject, lambda msg: got.append(msg.data))
    assert not isinstance(sub._pending_queue, DirectDispatch)
    assert sub._wait_for_msgs_task is not None
    for n in range(20):
        await nc.publish(subject, str(n).encode())
    await nc.flush()
    await _until(lambda: len(got) == 20)
    assert got == [str(n).encode() for n in range(20)]
    assert len(nc._subs) == 1


def _collect(errors: list[Exception]) -> Callable[[Exception], Awaitable[None]]:
    async def error_cb(error: Exception) -> None:
        errors.append(error)

    return error_cb
